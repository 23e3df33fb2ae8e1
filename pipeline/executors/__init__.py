"""Executors: one per stage kind, found by kind through `pipeline.executors.registry`.

A stage kind (in `pipeline.stages`) is plain data; the code that carries it out lives here and is
imported only when a run needs it, so loading or rendering a definition never loads an executor.
"""
