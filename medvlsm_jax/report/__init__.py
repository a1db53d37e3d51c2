"""``medvlsm-report DIR``: a sweep store (:mod:`medvlsm_jax.sweep.store`) as the paper's tables
and figures, and one self-contained HTML report.

Writes into ``<DIR>/report`` (or ``--out``):

* ``tables.md`` and one ``<table>.csv`` per table (:mod:`medvlsm_jax.report.tables`: Tables 3,
  4, 6, 7, 8 and the pooled table; mean ± std Dice, best bold, the paper's number and the
  difference where the paper gives one);
* ``fig2.png`` (Dice by prompt), ``fig3.png`` (relative ΔDice per swapped attribute),
  ``overlays_<dataset>.png`` (best and worst test images) — :mod:`medvlsm_jax.report.figures`;
* ``report.html``: all of it in one file (images inline as data URIs, no external resource),
  with the runs' reproducibility records summarised. A small inline script marks the page
  ``data-images-ok`` / ``data-images-broken`` once every image decoded, which the browser test
  reads.
"""

from __future__ import annotations

import base64
import collections
import html
import json
import os
import time
from typing import Any

from medvlsm_jax.report import figures
from medvlsm_jax.report.tables import Table, all_tables

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:center;vertical-align:top}
thead th{background:#f2f2f2} tbody th{text-align:left;background:#fafafa}
small{color:#666} .note{color:#555;font-size:13px} img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
#image-check{padding:6px 10px;border-radius:4px;display:inline-block}
.ok{background:#e6f4ea} .broken{background:#fce8e6}
"""

CHECK_SCRIPT = """
<script>
(function(){
  function check(){
    var imgs=Array.prototype.slice.call(document.images);
    var pending=imgs.filter(function(i){return !i.complete;});
    if(pending.length){setTimeout(check,50);return;}
    var broken=imgs.filter(function(i){return !(i.naturalWidth>0);});
    document.body.setAttribute('data-images-ok',String(imgs.length-broken.length));
    document.body.setAttribute('data-images-broken',String(broken.length));
    var el=document.getElementById('image-check');
    el.textContent=broken.length?(broken.length+' image(s) failed to decode'):('all '+imgs.length+' images decoded');
    el.className=broken.length?'broken':'ok';
  }
  if(document.readyState==='complete'){check();}else{window.addEventListener('load',check);}
})();
</script>
"""


def _data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def _repro_summary(results: list[dict[str, Any]]) -> str:
    commits = collections.Counter((r["repro"]["git"].get("commit") or "unknown")[:12]
                                  + (" (dirty)" if r["repro"]["git"].get("dirty") else "") for r in results)
    devices = collections.Counter(f"{r['repro']['device']['platform']} {r['repro']['device']['kind']} "
                                  f"x{r['repro']['device']['count']}" for r in results)
    versions = collections.Counter(", ".join(f"{k} {v}" for k, v in r["repro"]["versions"].items()
                                             if k in ("jax", "flax", "optax", "medvlsm-jax") and v) for r in results)
    kinds = collections.Counter(r["kind"] for r in results)
    hours = sum(r["repro"]["wall_seconds"] for r in results) / 3600
    items = [f"runs: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}; wall time {hours:.2f} h in all",
             "git commits: " + "; ".join(f"{c} ({n})" for c, n in commits.items()),
             "devices: " + "; ".join(f"{d} ({n})" for d, n in devices.items()),
             "packages: " + "; ".join(f"{v} ({n})" for v, n in versions.items())]
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _runs_table(results: list[dict[str, Any]]) -> str:
    head = "<tr><th>run</th><th>kind</th><th>settings</th><th>wall s</th><th>img/s</th><th>seed</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(r['id'])}</td><td>{r['kind']}</td><td>{html.escape(','.join(r.get('settings', ())))}"
        f"</td><td>{r['repro']['wall_seconds']:.1f}</td><td>{r['repro']['images_per_second'] or '-'}</td>"
        f"<td>{r['repro']['seed']}</td></tr>" for r in results)
    return f"<details><summary>{len(results)} runs</summary><table data-table='runs'>{head}{rows}</table></details>"


def write_html(path: str, tables: list[Table], images: list[tuple[str, str]], results: list[dict[str, Any]],
               notes: list[str], source: str) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>medvlsm-jax report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>medvlsm-jax sweep report</h1>",
             f"<p class='note'>store {html.escape(source)}; generated {time.strftime('%Y-%m-%d %H:%M')}</p>",
             "<p id='image-check'>checking images…</p>",
             "<h2>Tables</h2>"]
    parts += [t.html() for t in tables if not t.is_empty()]
    empty = [t.name for t in tables if t.is_empty()]
    if empty:
        parts.append(f"<p class='note'>no runs yet for: {html.escape(', '.join(empty))}</p>")
    parts.append("<h2>Figures</h2>")
    for title, p in images:
        parts.append(f"<figure><figcaption>{html.escape(title)}</figcaption>"
                     f"<img alt='{html.escape(title)}' src='{_data_uri(p)}'></figure>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts += ["<h2>Reproducibility</h2>", _repro_summary(results) if results else "", _runs_table(results),
              CHECK_SCRIPT, "</body></html>"]
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


def build_report(workdir: str, out_dir: str | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """Writes the report of the store in ``workdir``; returns the paths written and notes."""
    from medvlsm_jax.sweep.store import Store  # noqa: PLC0415

    store = Store(workdir)
    results = store.results()
    out_dir = os.path.abspath(out_dir or os.path.join(store.workdir, "report"))
    os.makedirs(out_dir, exist_ok=True)
    tables = all_tables(results)
    written: dict[str, Any] = {"tables": {}, "figures": [], "notes": []}
    with open(os.path.join(out_dir, "tables.md"), "w") as f:
        f.write("# Results\n\n" + "\n".join(t.markdown() for t in tables if not t.is_empty()))
    written["markdown"] = os.path.join(out_dir, "tables.md")
    for t in tables:
        if t.is_empty():
            continue
        path = os.path.join(out_dir, f"{t.name}.csv")
        with open(path, "w") as f:
            f.write(t.csv())
        written["tables"][t.name] = path
    images = []
    for title, fn, name in (("Fig. 2 — Dice by prompt", figures.fig2, "fig2.png"),
                            ("Fig. 3 — relative ΔDice per swapped attribute", figures.fig3, "fig3.png")):
        p = fn(results, os.path.join(out_dir, name))
        if p:
            images.append((title, p))
        else:
            written["notes"].append(f"{name}: no runs for it in the store")
    paths, notes = figures.overlays(results, store.runs_dir, out_dir, data_dir)
    images += [(f"best and worst test images — {os.path.basename(p)[9:-4]}", p) for p in paths]
    written["notes"] += notes
    index = store.index().get("runs", {})
    failed = sorted(rid for rid, e in index.items() if e.get("status") == "failed")
    pending = sorted(rid for rid, e in index.items() if e.get("status") in ("pending", "running"))
    if failed:
        written["notes"].append(f"{len(failed)} failed run(s): {', '.join(failed)}")
    if pending:
        written["notes"].append(f"{len(pending)} run(s) not finished: {', '.join(pending[:20])}"
                                + (" …" if len(pending) > 20 else ""))
    written["figures"] = [p for _, p in images]
    written["html"] = write_html(os.path.join(out_dir, "report.html"), tables, images, results, written["notes"],
                                 store.workdir)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump({k: v for k, v in written.items()}, f, indent=2)
    return written
