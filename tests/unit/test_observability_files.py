"""The dashboards and rules the chart ships are the generated ones, and every query in them is
PromQL a real parser accepts (the live checks are in tests/integration/test_observability.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from order_devtools.observability import dashboards, generate, promql, render


@pytest.mark.parametrize("path", sorted(generate.generated_files()), ids=lambda p: p.name)
def test_committed_file_is_what_generation_writes(path: Path) -> None:
    assert path.read_text() == generate.generated_files()[path], (
        f"run `make generate`: {path.relative_to(generate.REPO)} is stale"
    )


def test_the_chart_ships_no_dashboard_that_is_not_generated() -> None:
    shipped = set(generate.DASHBOARDS_DIR.iterdir())
    assert shipped == {generate.dashboard_path(spec) for spec in dashboards.DASHBOARDS}


@pytest.mark.parametrize("spec", dashboards.DASHBOARDS, ids=lambda d: d.uid)
def test_every_panel_has_a_title_a_unit_and_queries_that_parse(spec: dashboards.Dashboard) -> None:
    model = generate.load_dashboard(generate.dashboard_path(spec))
    queries = list(promql.panel_queries(model))
    assert queries
    for query in queries:
        assert query.panel
        assert query.unit, query.panel
        assert query.legend, query.panel
        assert promql.metric_names(promql.substitute_variables(query.expr, rate_window="5m"))
    panels = [p for p in model["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)


def test_every_rule_expression_parses() -> None:
    for group in generate.load_rules()["groups"]:
        for rule in group["rules"]:
            assert promql.metric_names(rule["expr"]), rule


def test_a_render_has_as_many_columns_as_grafana_fits_its_narrowest_panels() -> None:
    columns = {
        spec.uid: render.columns(
            [p for p in dashboards.build(spec)["panels"] if p["type"] != "row"]
        )
        for spec in dashboards.DASHBOARDS
    }
    # the rollouts' rows of four (API, processor) each fill one line of the picture
    assert columns == {
        dashboards.PIPELINE.uid: 3,
        dashboards.OPERATOR.uid: 3,
        dashboards.ROLLOUTS.uid: 4,
    }
