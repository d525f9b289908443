"""The monitoring dashboard: one HTML page (plots drawn as inline SVG by a small script in the
page — no chart library, no network), its JSON, and Prometheus ``/metrics``. Binds 127.0.0.1.

Routes: ``GET /`` (the page), ``GET /api/dashboard`` (the data the page plots),
``GET /metrics`` (Prometheus text, recomputed from the store at each scrape),
``GET /healthz``.

Plots: engagement decay curves per version (engagement rate relative to the version's first
day, by model age), diversity over time (intra-list diversity, topic entropy, coverage,
rabbit-hole similarity, per version), head rates over time (click / save / hide per
impression), and the alert list. Every plotted point is an SVG ``circle.point`` inside a
``svg.plot[data-plot=NAME]``, so a headless browser can check that the plots hold data.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitoring.alerts import MonitoringMetrics
from monitoring.config import MonitoringConfig
from monitoring.pipeline import headline_figures
from monitoring.store import MetricStore
from transact.schema import DAY_MS

__all__ = ["DashboardServer", "create_app", "dashboard_data", "start_dashboard"]

DIVERSITY_METRICS = ("intra_list_diversity", "topic_entropy", "catalogue_coverage",
                     "rabbit_hole_similarity")
HEAD_RATES = ("click_rate", "save_rate", "hide_rate")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _series(frame: pd.DataFrame, x: str, y: str, x_scale: float = 1.0
            ) -> dict[str, list[list[float]]]:
    out: dict[str, list[list[float]]] = {}
    if y not in frame.columns:
        return out
    for version, group in frame.groupby("model_version"):
        pts = [[float(a) / x_scale, float(b)] for a, b in zip(group[x], group[y], strict=True)
               if b is not None and math.isfinite(float(b))]
        if pts:
            out[str(version)] = pts
    return out


def dashboard_data(store: MetricStore) -> dict[str, Any]:
    """Everything the page plots: ``decay`` {version: [[age_days, rel], ...]}, ``diversity``
    {metric: {version: [[day, value], ...]}}, ``rates`` {head: {version: ...}}, ``alerts``,
    ``headline``. Days are days since the epoch (float)."""
    windows, decay, alerts = store.windows(), store.decay(), store.alerts()
    day = float(DAY_MS)
    return {
        "decay": _series(decay, "age_days", "engagement_rate_rel"),
        "diversity": {m: _series(windows, "window_start_ms", m, day) for m in DIVERSITY_METRICS},
        "rates": {m: _series(windows, "window_start_ms", m, day) for m in HEAD_RATES},
        "alerts": [{k: _clean(v) for k, v in vars(a).items()} for a in alerts],
        "headline": {k: _clean(v) for k, v in headline_figures(windows, decay, alerts).items()},
        "day_ms": DAY_MS,
    }


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TransAct monitoring</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin:1.2em 0 .3em}
.grid{display:flex;flex-wrap:wrap;gap:1em} figure{margin:0}
figcaption{font-size:.85em;color:#555}
svg.plot{border:1px solid #ddd;background:#fff}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:.2em .5em}
#headline span{display:inline-block;margin-right:1.5em}
</style></head><body>
<h1>TransAct monitoring</h1>
<div id="headline">loading…</div>
<h2>Engagement decay by model age</h2>
<div class="grid" id="decay-plots"></div>
<h2>Diversity over time</h2>
<div class="grid" id="diversity-plots"></div>
<h2>Head rates over time</h2>
<div class="grid" id="rate-plots"></div>
<h2>Alerts</h2>
<table id="alerts"><thead><tr><th>created</th><th>kind</th><th>version</th><th>window</th>
<th>metric</th><th>value</th><th>reference</th><th>message</th></tr></thead><tbody></tbody></table>
<script>
const COLORS=["#1f77b4","#d62728","#2ca02c","#9467bd","#ff7f0e","#8c564b","#e377c2","#17becf"];
const NS="http://www.w3.org/2000/svg";
function el(tag,attrs,parent){const e=document.createElementNS(NS,tag);
  for(const k in attrs)e.setAttribute(k,attrs[k]);if(parent)parent.appendChild(e);return e;}
function plot(container,name,title,xlabel,series){
  const W=430,H=250,L=55,R=10,T=10,B=40;
  const fig=document.createElement("figure");container.appendChild(fig);
  const svg=el("svg",{width:W,height:H,class:"plot","data-plot":name},null);fig.appendChild(svg);
  const cap=document.createElement("figcaption");cap.textContent=title;fig.appendChild(cap);
  const pts=[].concat(...Object.values(series));
  if(!pts.length){el("text",{x:W/2,y:H/2,"text-anchor":"middle"},svg).textContent="no data";return;}
  let x0=Math.min(...pts.map(p=>p[0])),x1=Math.max(...pts.map(p=>p[0]));
  let y0=Math.min(...pts.map(p=>p[1])),y1=Math.max(...pts.map(p=>p[1]));
  if(x1===x0){x1=x0+1;} if(y1===y0){y1=y0+Math.abs(y0||1)*0.1;y0=y0-Math.abs(y0||1)*0.1;}
  const pad=(y1-y0)*0.08;y0-=pad;y1+=pad;
  const sx=x=>L+(x-x0)/(x1-x0)*(W-L-R), sy=y=>H-B-(y-y0)/(y1-y0)*(H-T-B);
  el("line",{x1:L,y1:H-B,x2:W-R,y2:H-B,stroke:"#888"},svg);
  el("line",{x1:L,y1:T,x2:L,y2:H-B,stroke:"#888"},svg);
  for(const v of [y0,(y0+y1)/2,y1]){const t=el("text",{x:L-4,y:sy(v)+4,"text-anchor":"end",
    "font-size":10},svg);t.textContent=v.toPrecision(3);}
  for(const v of [x0,(x0+x1)/2,x1]){const t=el("text",{x:sx(v),y:H-B+14,"text-anchor":"middle",
    "font-size":10},svg);t.textContent=v.toFixed(1);}
  el("text",{x:(L+W)/2,y:H-6,"text-anchor":"middle","font-size":11},svg).textContent=xlabel;
  Object.entries(series).forEach(([version,points],i)=>{
    const c=COLORS[i%COLORS.length];
    el("polyline",{points:points.map(p=>sx(p[0])+","+sy(p[1])).join(" "),fill:"none",
      stroke:c,"stroke-width":1.5,class:"series","data-version":version},svg);
    for(const p of points){const d=el("circle",{cx:sx(p[0]),cy:sy(p[1]),r:2.5,fill:c,
      class:"point"},svg);el("title",{},d).textContent=version+": "+p[0].toFixed(2)+", "+p[1];}
    el("text",{x:W-R-4,y:T+12+12*i,"text-anchor":"end","font-size":10,fill:c},svg)
      .textContent=version;
  });
}
fetch("api/dashboard").then(r=>r.json()).then(d=>{
  const h=document.getElementById("headline");h.textContent="";
  for(const [k,v] of Object.entries(d.headline)){const s=document.createElement("span");
    s.className="figure";s.dataset.name=k;s.textContent=k+": "+v;h.appendChild(s);}
  plot(document.getElementById("decay-plots"),"decay",
       "engagement rate / the version's first day","model age (days)",d.decay);
  for(const [m,s] of Object.entries(d.diversity))
    plot(document.getElementById("diversity-plots"),m,m,"day",s);
  for(const [m,s] of Object.entries(d.rates))
    plot(document.getElementById("rate-plots"),m,m+" (per impression)","day",s);
  const body=document.querySelector("#alerts tbody");
  for(const a of d.alerts){const tr=document.createElement("tr");tr.className="alert";
    for(const v of [new Date(a.created_at_ms).toISOString(),a.kind,a.model_version,
      (a.window_start_ms/d.day_ms).toFixed(1),a.metric,a.value,a.reference,a.message]){
      const td=document.createElement("td");td.textContent=v;tr.appendChild(td);}
    body.appendChild(tr);}
  document.body.dataset.loaded="true";
}).catch(e=>{document.getElementById("headline").textContent="error: "+e;});
</script></body></html>
"""


def create_app(cfg: MonitoringConfig, store: MetricStore | None = None) -> FastAPI:
    """The dashboard's FastAPI app over ``store`` (default: ``cfg.metrics_url``)."""
    store = store or MetricStore(cfg.metrics_url, cfg.metrics_schema)
    app = FastAPI(title="TransAct monitoring", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return _PAGE

    @app.get("/api/dashboard")
    def data() -> JSONResponse:
        return JSONResponse(dashboard_data(store))

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        prom = MonitoringMetrics.create()
        alerts = store.alerts(limit=100_000)
        prom.update(store.windows(), alerts, alerts, cfg.alerts)
        return PlainTextResponse(generate_latest(prom.registry).decode(),
                                 media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


@dataclass
class DashboardServer:
    """A dashboard running in a background thread; :meth:`stop` ends it."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_dashboard(cfg: MonitoringConfig, store: MetricStore | None = None,
                    port: int | None = None) -> DashboardServer:
    """Serve the dashboard on ``cfg.dashboard_host``:``port`` (0: a free port) in a thread."""
    import socket

    import uvicorn

    host = cfg.dashboard_host
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the dashboard binds loopback only, not {host!r}")
    port = cfg.dashboard_port if port is None else port
    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, store), host=host, port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True, name="monitoring-dashboard")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the dashboard did not start on {host}:{port}")
        time.sleep(0.05)
    return DashboardServer(f"http://{host}:{port}/", server, thread)
