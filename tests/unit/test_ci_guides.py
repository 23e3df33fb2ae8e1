"""The CI guides (docs/ci/) name what the renderers really use: credential ids, connection names,
actions, labels, the DSL version. When a renderer changes one of these, this fails until the guide
says the new name."""

from __future__ import annotations

import pytest

from pipeline.model import AgentLabels
from pipeline.render import github, gitlab, gitlab_gate, jenkins, plan, teamcity
from pipeline.render.plan import camel
from tests.conftest import REPO

GUIDES = REPO / "docs" / "ci"


def _guide(name: str) -> str:
    return (GUIDES / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["jenkins.md", "teamcity.md", "github.md", "gitlab.md"])
def test_every_guide_names_the_default_agent_labels_and_the_venv(name: str) -> None:
    text = _guide(name)
    labels = AgentLabels()
    for label in (*labels.docker, *labels.packer, *labels.local):
        assert f"`{label}`" in text, (name, label)
    assert plan.VENV_ROOT in text, name
    assert "pipeline render --check" in text, name


def test_the_github_guide_names_the_venv_cache() -> None:
    text = _guide("github.md")
    assert f"`{github.CACHE}`" in text
    assert f"`{github.VENV_CACHE_FOLDER}/" in text
    assert "runner.tool_cache" in text


def test_the_jenkins_guide_names_its_credentials_and_steps() -> None:
    text = _guide("jenkins.md")
    assert f"`aws-{plan.BUILD_ACCESS}`" in text
    assert f"`{plan.GIT_PUSH_CREDENTIALS}`" in text
    assert jenkins.CHECKOUT_BRANCH in text
    assert jenkins.RENDER_CHECK_STAGE in text
    for step in ("AmazonWebServicesCredentialsBinding", "gitUsernamePassword", "lock(resource:", "input {"):
        assert step in text, step
    assert "Multibranch Pipeline" in text


def test_the_teamcity_guide_names_its_connections_key_parameters_and_version() -> None:
    text = _guide("teamcity.md")
    assert f"`Aws{camel(plan.BUILD_ACCESS)}`" in text
    assert f'teamcitySshKey = "{plan.GIT_PUSH_CREDENTIALS}"' in text
    assert f'version = "{teamcity.DSL_VERSION}"' in text
    assert f"{teamcity.LABEL_PARAMETER}.docker" in text
    assert teamcity.ALL_USERS_GROUP in text


def test_the_github_guide_names_its_actions_secret_and_gate_step() -> None:
    text = _guide("github.md")
    for action in (github.CHECKOUT, github.SETUP_PYTHON, github.UPLOAD, github.DOWNLOAD, github.AWS_CREDENTIALS):
        assert f"`{action}`" in text, action
    assert f"`{github.AWS_ROLE_SECRET}`" in text
    assert github.RENDER_CHECK_JOB in text
    assert "pipeline ci github-reviewers" in text
    assert f"`{AgentLabels().hosted}`" in text


def test_the_gitlab_guide_names_its_variables_tags_gate_and_jobs() -> None:
    text = _guide("gitlab.md")
    for variable in (gitlab.AWS_ROLE_VARIABLE, gitlab.PUSH_TOKEN_VARIABLE, gitlab_gate.TOKEN_VARIABLE):
        assert f"`{variable}`" in text, variable
    assert gitlab.AWS_TOKEN_VARIABLE in text
    assert gitlab.AWS_AUDIENCE in text
    assert gitlab.RENDER_CHECK_JOB in text
    assert "pipeline ci gitlab-approval" in text
    assert gitlab.CI_FILE in text
    for construct in ("when: manual", "allow_failure: false", "resource_group", "when: always", "after_script"):
        assert construct in text, construct
    assert f"`{AgentLabels().root[0]}`" in text


def test_the_index_lists_every_guide() -> None:
    text = _guide("README.md")
    for name in ("jenkins.md", "teamcity.md", "github.md", "gitlab.md"):
        assert f"]({name})" in text, name
