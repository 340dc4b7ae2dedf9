"""Blocking asset checks: the Great Expectations gates on silver and gold.

One check step per layer (Great Expectations is slow to import, so each step imports it once).
A failed gate has ERROR severity and is blocking: what depends on the table does not run.
"""

from collections.abc import Iterator

import dagster as dg

from orchestration.lib.gates import (
    Gate,
    GateContext,
    GateResult,
    now_utc,
    previous_rows,
    remember_rows,
    render_report,
    run_gate,
)
from orchestration.lib.resources import LakeResource


def check_name(gate: Gate) -> str:
    return f"{gate.asset}_quality_check"


def gate_checks(layer: str, gates: list[Gate]) -> dg.AssetChecksDefinition:
    specs = [
        dg.AssetCheckSpec(
            check_name(g),
            asset=g.asset,
            blocking=True,
            description=f"Great Expectations gate: {g.description}",
        )
        for g in gates
    ]

    @dg.multi_asset_check(specs=specs, name=f"{layer}_quality_checks", can_subset=True)
    def _checks(
        context: dg.AssetCheckExecutionContext, lake: LakeResource
    ) -> Iterator[dg.AssetCheckResult]:
        selected = {key.name for key in context.selected_asset_check_keys}
        at = now_utc()
        state = lake.paths.root / "quality"
        results: list[GateResult] = []
        con = lake.connect(read_only=True)
        try:
            for gate in gates:
                if check_name(gate) not in selected:
                    continue
                frame = con.execute(f"SELECT * FROM {gate.table}").df()
                ctx = GateContext(
                    now=at,
                    freshness_hours=lake.freshness_hours,
                    future_skew_s=lake.future_skew_s,
                    max_row_drop=lake.max_row_drop,
                    previous_rows=previous_rows(state, gate.asset),
                )
                result = run_gate(gate, frame, ctx)
                results.append(result)
                if result.passed:
                    remember_rows(state, gate.asset, result.rows, at)
                else:
                    context.log.error(result.reason())
                yield dg.AssetCheckResult(
                    asset_key=gate.asset,
                    check_name=check_name(gate),
                    passed=result.passed,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=result.reason(),
                    metadata={
                        "rows": result.rows,
                        "expectations": result.evaluated,
                        "failed_expectations": [f.expectation for f in result.failures],
                        "reason": result.reason(),
                        "sample_bad_rows": dg.MetadataValue.md(result.sample_markdown()),
                    },
                )
        finally:
            con.close()
        report = lake.paths.root / "reports" / f"quality-{layer}.html"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render_report(results, f"Sentinel lake: {layer} gates", at))
        context.log.info(f"gate report: {report}")

    return _checks
