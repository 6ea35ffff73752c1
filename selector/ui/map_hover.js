// Thumbnails on hover for the Map page's Plotly chart (selector/ui/hover.py mounts it; a Streamlit v2 component).
//
// The chart's sample markers carry each row's table index as customdata[0]. On `plotly_hover` this shows a small
// card beside the cursor with the row's image. An image not seen yet is asked of Python once (the component's
// `row` state: only the hover fragment re-runs), and comes back in `data.src`; every image received is kept for
// the page's life (per run), so moving back over a point shows it at once.
export default function (component) {
  const { data, setStateValue } = component;
  if (!data || !data.chart) return;
  const all = (window.__selectorHover = window.__selectorHover || {});
  const s = all[data.run] || (all[data.run] = { images: new Map(), want: null, x: 0, y: 0, asked: null, timer: 0 });
  for (const other of Object.keys(all)) if (other !== data.run) delete all[other];   // one run per page
  if (data.row !== null && data.row !== undefined && data.src) {
    s.images.set(data.row, data.src);
    if (s.images.size > MAX_IMAGES) s.images.delete(s.images.keys().next().value);   // the oldest first
  }

  const tip = tipElement();
  const show = () => {
    const src = s.want === null ? null : s.images.get(s.want);
    if (!src) { tip.style.display = "none"; return; }
    tip.dataset.row = String(s.want);
    tip.querySelector("img").src = src;
    tip.querySelector("span").textContent = "row " + s.want;
    tip.style.display = "block";
    const w = tip.offsetWidth, h = tip.offsetHeight, gap = 14;            // above and left of the cursor:
    let left = s.x - w - gap, top = s.y - h - gap;                         // Plotly's label sits to its right
    if (left < 4) left = s.x + gap;
    if (top < 4) top = s.y + gap;
    tip.style.left = left + "px";
    tip.style.top = top + "px";
  };

  const ask = (row) => {             // one request at a time per row; a quick sweep asks only for where it rests
    clearTimeout(s.timer);
    s.timer = setTimeout(() => {
      if (s.want === row && !s.images.has(row) && s.asked !== row) {
        s.asked = row;
        setStateValue("row", row);
      }
    }, ASK_DELAY_MS);
  };

  const attach = () => {
    const gd = document.querySelector(".st-key-" + data.chart + " .js-plotly-plot");
    if (!gd || typeof gd.on !== "function" || gd.__selectorHover === data.run) return;
    gd.__selectorHover = data.run;
    gd.addEventListener("mousemove", (e) => { s.x = e.clientX; s.y = e.clientY; });
    gd.on("plotly_hover", (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (!p || !p.customdata || p.data.name !== "samples") return;
      if (ev.event && ev.event.clientX !== undefined) { s.x = ev.event.clientX; s.y = ev.event.clientY; }
      s.want = Math.round(Number(p.customdata[0]));
      show();
      if (!s.images.has(s.want)) ask(s.want);
    });
    gd.on("plotly_unhover", () => { s.want = null; show(); });
    gd.addEventListener("mouseleave", () => { s.want = null; show(); });
  };

  show();
  attach();
  const poll = setInterval(attach, 500);   // the chart is drawn after this element, and again when its key changes
  return () => { clearInterval(poll); tip.style.display = "none"; };
}

const MAX_IMAGES = 2000;
const ASK_DELAY_MS = 40;

function tipElement() {
  let tip = document.getElementById("selector-map-hover");
  if (tip) return tip;
  tip = document.createElement("div");
  tip.id = "selector-map-hover";
  tip.style.cssText = "position:fixed;z-index:1000;pointer-events:none;display:none;padding:4px;" +
    "background:#fff;border:1px solid #b0b8c4;border-radius:4px;box-shadow:0 2px 6px rgba(0,0,0,.25);" +
    "font:11px sans-serif;color:#444;text-align:center";
  tip.innerHTML = '<img alt="" style="display:block;width:112px;height:112px;object-fit:contain;' +
    'image-rendering:pixelated"><span></span>';
  document.body.appendChild(tip);
  return tip;
}
