"""What is bundled (`apex.py models`, `apex.py gpus`), rendered without the heavy imports.

These listings only read the bundled configs and the device catalogue, so they import neither
NumPy, Numba, Polars nor the command-line framework: `apex_fast.entry` prints them directly.
"""

from __future__ import annotations


def _json(records: object) -> str:
    import orjson

    return orjson.dumps(records, option=orjson.OPT_INDENT_2).decode()


def models_text(json_out: bool = False) -> str:
    """The bundled models with their parameter counts (a table, or JSON records for tools)."""
    if json_out:
        from apex_fast.models.catalog import model_records

        return _json(model_records())
    from apex_fast.models import list_models
    from apex_fast.models.names import model_aliases
    from apex_fast.report.table import table

    aliases: dict[str, list[str]] = {}
    for alias, name in model_aliases().items():
        if alias != name:
            aliases.setdefault(name, []).append(alias)
    rows = []
    for m in list_models():
        kind = m.arch + (", MoE" if m.is_moe else "")
        total = m.params_total() / 1e9
        active = m.params_active() / 1e9
        size = f"{total:.2f} B" + (f" ({active:.2f} B active)" if m.is_moe else "")
        rows.append([m.name, kind, size, ", ".join(sorted(aliases.get(m.name, []))[:3])])
    return table(["Model", "Kind", "Parameters", "Also known as"], rows)


def gpus_text(json_out: bool = False) -> str:
    """The known devices with their datasheet numbers (a table, or JSON records for tools)."""
    if json_out:
        from apex_fast.hardware.catalog import device_records

        return _json(device_records())
    from apex_fast.hardware.devices import list_devices
    from apex_fast.report.table import table

    rows = []
    for d in list_devices():
        rows.append(
            [
                d.name,
                f"{d.peak_tflops.get('fp16', 0):g}",
                f"{d.peak_tflops.get('fp8', 0):g}" if d.peak_tflops.get("fp8") else "-",
                f"{d.hbm_gb:g}",
                f"{d.hbm_tbps:g}",
                f"{d.intra_node_gbps:g} ({d.intra_node_link})",
                f"{d.tdp_w:g}",
            ]
        )
    return table(
        ["GPU", "FP16 TFLOPS", "FP8 TFLOPS", "HBM GiB", "HBM TB/s", "Link GB/s/dir", "TDP W"],
        rows,
    )


LISTINGS = {"models": models_text, "gpus": gpus_text}
