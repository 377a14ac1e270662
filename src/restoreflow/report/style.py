"""The report page's static parts: its stylesheet and the one inline script (which the
page's Content-Security-Policy allows by hash).
"""

# Writes "<loaded>/<total>" into body[data-images-loaded] once the page has loaded, so a
# headless browser (and a curious reader) can check that every inline image decoded.
LOAD_SCRIPT = (
    'window.addEventListener("load",function(){var m=document.images,k=0;'
    "for(var i=0;i<m.length;i++){if(m[i].complete&&m[i].naturalWidth>0){k++;}}"
    'document.body.setAttribute("data-images-loaded",k+"/"+m.length);});'
)

CSS = """
:root { --fg:#1d2430; --muted:#5f6b7a; --line:#dde2e8; --bg:#f4f6f8; --card:#fff;
        --bad:#c62828; --good:#2e7d32; --warn:#b26a00; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 14px/1.45 system-ui, "Segoe UI", "DejaVu Sans", "Liberation Sans", sans-serif; }
main { max-width: 1220px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; }
h3 { font-size: 15px; margin: 0; word-break: break-all; }
code, .mono { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 12px; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
.panel { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
         padding: 12px 16px; }
.top { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 16px;
       align-items: start; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; margin: 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; word-break: break-word; }
table.t { border-collapse: collapse; width: 100%; }
table.t th, table.t td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
                         vertical-align: top; }
table.t th { color: var(--muted); font-weight: 600; }
table.t td.num { text-align: right; font-variant-numeric: tabular-nums; }
.chips span { display: inline-block; background: #eef1f5; border-radius: 10px;
              padding: 0 8px; margin: 0 4px 3px 0; font-size: 12px; }
.badge { display: inline-block; border-radius: 4px; padding: 1px 8px; font-size: 12px;
         font-weight: 700; letter-spacing: .04em; color: #fff; vertical-align: middle; }
.badge.flagged { background: var(--bad); }
.badge.ok { background: var(--good); }
.badge.none { background: #8a94a3; }
.note { border-left: 4px solid var(--warn); background: #fff8e6; padding: 6px 10px;
        margin: 8px 0; }
.note.bad { border-color: var(--bad); background: #fdecec; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
        padding: 12px 16px; margin: 0 0 16px; }
.card.flagged { border-left: 6px solid var(--bad); }
.card header { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap;
               margin-bottom: 8px; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; background: #e9ecf0;
             image-rendering: pixelated; border: 1px solid var(--line); }
figcaption { font-size: 12px; color: var(--muted); margin-top: 3px; }
figcaption b { color: var(--fg); }
.missing { width: 256px; height: 64px; border: 1px dashed #b9c1cc; border-radius: 4px;
           display: flex; align-items: center; justify-content: center; color: var(--muted);
           font-size: 12px; }
.cbar { height: 8px; border-radius: 2px; margin-top: 4px; }
.cbar-labels { display: flex; justify-content: space-between; font-size: 11px; }
.metrics { margin-top: 10px; display: flex; flex-wrap: wrap; gap: 6px 28px; }
.metrics .bound { font-size: 15px; }
.held { color: var(--good); font-weight: 600; }
.missed { color: var(--bad); font-weight: 600; }
details { margin-top: 6px; }
summary { cursor: pointer; color: var(--muted); font-size: 12px; }
.plot img { display: block; max-width: 100%; height: auto; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
@media (max-width: 900px) { .top { grid-template-columns: 1fr; } }
"""
