"""Dashboards and Prometheus rules of the pipeline, as code.

`python -m order_devtools.observability --write` (`make generate`) writes them into the chart:
the Grafana dashboards to `charts/order-pipeline/dashboards/` and the rules to
`charts/order-pipeline/files/prometheus-rules.yaml`; unit tests fail when those files are stale.
"""
