"""Test helpers that read rendered CI files the way their CI servers do (no runner can be installed
here for Jenkins or TeamCity):

- `jenkins_trace`: runs `DeclarativeStandIn.groovy` (a recording stand-in of the Declarative
  Pipeline DSL) under Groovy 2.4 on Jenkinsfiles and reads its traces;
- `jenkins_model`: what Jenkins does with such a trace at run time (skipping, agents, post
  conditions, failures, stashes), after pipeline-model-definition's ModelInterpreter;
- `kotlin_dsl`: reads TeamCity's Kotlin DSL with tree-sitter-kotlin, decoding string literals as
  the Kotlin compiler does (escapes, templates, raw strings, trimIndent);
- `teamcity_model`: the build configurations of a settings.kts and what TeamCity does with them
  (parameter references, step execution modes, dependency failure actions, artifact rules);
- `shell`: the simple commands of a POSIX sh script;
- `spec_facts`: what the spec and the target-neutral plan say each CI job must do.

They live under tests/ because they are test oracles, not part of the product.
"""
