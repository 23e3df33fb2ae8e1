"""The part of pipeline-as-code the web image carries: its OpenFeature provider (pipeline.flags).
Copies of pipeline/flags/{__init__,state,provider}.py; tests/unit/test_reference_app.py keeps them
identical."""
