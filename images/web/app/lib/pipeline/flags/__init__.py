"""Feature flags: declared in the definition, served by a Redis store in each environment's stack,
read by the application through an OpenFeature provider, moved without a deploy.

    spec.py      Flag (plain data in the definition) and the checks of flag values
    state.py     one flag's state in the store and the consistent bucketing (stdlib only: the
                 reference image imports it too)
    store.py     the store's keys over a redis-py client: read, set, history, rollouts, alert
    provider.py  the OpenFeature provider over redis-py (the `pipeline-as-code[flags]` extra)

Nothing here imports redis or openfeature at package import.
"""
