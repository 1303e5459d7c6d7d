"""The one model of Argo (and of kai-flows' own annotations on Argo objects) that every layer reads.

`names` (annotation keys, ConfigMap names, node ids, pod names, artifact keys), `depends` (the `depends` grammar and
its evaluation), `dag` (task order, cycles, ancestry through graphlib), `units` (Kubernetes quantities, Go durations).
Nothing here imports the engine, lint, the compiler or the store.
"""
