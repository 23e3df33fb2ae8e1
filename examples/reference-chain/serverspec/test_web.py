"""Stub testinfra check for the example pipeline (the repository's serverspec/ has the real ones)."""


def test_web_server_is_installed(host):  # type: ignore[no-untyped-def]
    assert host.file("/etc/os-release").exists
