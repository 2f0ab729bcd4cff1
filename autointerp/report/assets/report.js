/* autointerp report: latent browser over window.AUTOINTERP_INDEX (data/index.js); a latent's
   details come from latents/<hookpoint>/<first latent of its chunk>.js, loaded on demand. */
(function () {
  "use strict";
  var INDEX = window.AUTOINTERP_INDEX;
  var PAGE = 100;
  var chunks = {};      // "hp/first" -> {latent: detail}
  var pending = {};     // "hp/first" -> [callbacks]
  var state = { query: "", hookpoint: "", scorer: "", sort: "latent", order: "asc", page: 0 };
  var col = {};
  INDEX.columns.forEach(function (c, i) { col[c] = i; });

  function $(id) { return document.getElementById(id); }
  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function num(v, d) { return v == null ? "–" : Number(v).toFixed(d == null ? 3 : d); }
  function freq(v) { return v == null ? "–" : Number(v).toExponential(2); }

  // ---- index table -------------------------------------------------------------------------
  function setup() {
    INDEX.hookpoints.forEach(function (h, i) { $("hookpoint").add(new Option(h, String(i))); });
    INDEX.scorers.forEach(function (s) { $("scorer").add(new Option(s, s)); });
    ["latent", "frequency"].concat(INDEX.scorers).forEach(function (s) { $("sort").add(new Option(s, s)); });
    $("order").value = "asc";
    var head = "<tr><th>hookpoint</th><th>latent</th><th>explainer</th><th>explanation</th><th>frequency</th>" +
      INDEX.scorers.map(function (s) { return "<th>" + esc(s) + "</th>"; }).join("") + "</tr>";
    $("index-head").innerHTML = head;
    $("search").addEventListener("input", function (e) { state.query = e.target.value.trim().toLowerCase(); state.page = 0; render(); });
    ["hookpoint", "scorer", "sort", "order"].forEach(function (id) {
      $(id).addEventListener("change", function (e) { state[id] = e.target.value; state.page = 0; render(); });
    });
    $("prev").addEventListener("click", function () { if (state.page > 0) { state.page--; render(); } });
    $("next").addEventListener("click", function () { state.page++; render(); });
    $("index-body").addEventListener("click", function (e) {
      var tr = e.target.closest("tr");
      if (tr && tr.dataset.key) { location.hash = "#latent/" + tr.dataset.key; }
    });
    window.addEventListener("hashchange", route);
    render();
    route();
  }

  function filtered() {
    var q = state.query, hp = state.hookpoint, sc = state.scorer;
    var rows = INDEX.rows.filter(function (r) {
      if (hp !== "" && String(r[0]) !== hp) { return false; }
      if (sc && r[col[sc]] == null) { return false; }
      if (!q) { return true; }
      return String(r[col.latent]) === q || String(r[col.explanation] || "").toLowerCase().indexOf(q) >= 0;
    });
    var k = col[state.sort], sign = state.order === "desc" ? -1 : 1;
    rows.sort(function (a, b) {
      var x = a[k], y = b[k];
      if (x == null && y == null) { return a[col.latent] - b[col.latent]; }
      if (x == null) { return 1; }        // missing values last in either order
      if (y == null) { return -1; }
      return x === y ? a[col.latent] - b[col.latent] : (x < y ? -sign : sign);
    });
    return rows;
  }

  function render() {
    var rows = filtered();
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var shown = rows.slice(state.page * PAGE, (state.page + 1) * PAGE);
    $("index-body").innerHTML = shown.map(function (r) {
      var key = encodeURIComponent(INDEX.hookpoints[r[0]]) + "/" + r[col.latent];
      var text = r[col.status] === "ok" ? esc(r[col.explanation]) :
        '<span class="status-' + esc(r[col.status]) + '">(' + esc(r[col.status]) + ")</span>";
      return '<tr data-key="' + key + '" data-latent="' + r[col.latent] + '"><td>' + esc(INDEX.hookpoints[r[0]]) +
        '</td><td class="num">' + r[col.latent] + "</td><td>" + esc(r[col.explainer]) + "</td><td>" + text +
        '</td><td class="num">' + freq(r[col.frequency]) + "</td>" +
        INDEX.scorers.map(function (s) { return '<td class="num">' + num(r[col[s]]) + "</td>"; }).join("") + "</tr>";
    }).join("");
    $("count").textContent = rows.length + " of " + INDEX.rows.length + " explanations";
    $("page").textContent = "page " + (state.page + 1) + " / " + pages;
  }

  // ---- latent view -------------------------------------------------------------------------
  window.AUTOINTERP_CHUNK = function (data) {
    var key = data.hookpoint + "/" + data.first;
    chunks[key] = data.latents;
    (pending[key] || []).forEach(function (cb) { cb(); });
    delete pending[key];
  };

  function loadChunk(hp, first, cb) {
    var key = hp + "/" + first;
    if (chunks[key]) { cb(); return; }
    if (pending[key]) { pending[key].push(cb); return; }
    pending[key] = [cb];
    var s = document.createElement("script");
    s.src = "latents/" + encodeURIComponent(hp) + "/" + first + ".js";
    s.onerror = function () { chunks[key] = {}; delete pending[key]; cb(); };
    document.head.appendChild(s);
  }

  function route() {
    var m = /^#latent\/([^/]+)\/(\d+)$/.exec(location.hash);
    var view = $("latent-view");
    ["summary", "plots", "latents"].forEach(function (id) { $(id).hidden = !!m; });
    view.hidden = !m;
    if (!m) { return; }
    var hp = decodeURIComponent(m[1]), latent = Number(m[2]);
    var first = Math.floor(latent / INDEX.chunk) * INDEX.chunk;
    $("latent-detail").innerHTML = "<p>loading latent " + latent + "…</p>";
    loadChunk(hp, first, function () {
      var d = (chunks[hp + "/" + first] || {})[latent];
      $("latent-detail").innerHTML = d ? detail(d) :
        "<p>No details for latent " + latent + " of " + esc(hp) + " in this report.</p>";
      window.scrollTo(0, 0);
    });
  }

  function explanationOf(hpIndex, latent) {
    for (var i = 0; i < INDEX.rows.length; i++) {
      var r = INDEX.rows[i];
      if (r[0] === hpIndex && r[col.latent] === latent && r[col.status] === "ok") { return r[col.explanation]; }
    }
    return null;
  }

  function windows(list, title) {
    if (!list.length) { return "<h3>" + title + "</h3><p>none</p>"; }
    return "<h3>" + title + " (" + list.length + ")</h3>" + list.map(function (w) {
      var tag = w.kind === "activating" ? "max " + num(w.max, 2) + (w.quantile != null ? " · q" + w.quantile : "") :
        w.kind + (w.source_latent != null ? " of " + w.source_latent : "");
      return '<div class="window ' + esc(w.kind) + '"><span class="tag">' + esc(w.split) + " · " + esc(tag) +
        "</span>" + w.html + "</div>";    // w.html is escaped by the report builder
    }).join("");
  }

  function detail(d) {
    var hpIndex = INDEX.hookpoints.indexOf(d.hookpoint);
    var out = "<h2>Latent " + d.latent + ' <small>' + esc(d.hookpoint) + "</small></h2>";
    if (d.skipped) { out += '<p class="status-skipped">skipped by the sample stage: ' + esc(d.skipped) + "</p>"; }
    out += "<h3>Explanations</h3><table><tr><th>explainer</th><th>candidate</th><th>selected</th><th>status</th>" +
      "<th>explanation</th><th>selection score</th></tr>" + d.explanations.map(function (e) {
        return '<tr class="' + (e.selected ? "selected" : "") + '"><td>' + esc(e.explainer) + '</td><td class="num">' +
          e.candidate + "</td><td>" + (e.selected ? "✓" : "") + '</td><td class="status-' + esc(e.status) + '">' +
          esc(e.status) + "</td><td>" + esc(e.status === "ok" ? e.explanation : e.error) + '</td><td class="num">' +
          num(e.selection_score) + "</td></tr>";
      }).join("") + "</table>";
    out += "<h3>Scores</h3>";
    out += d.scores.length ? "<table><tr><th>scorer</th><th>explainer</th><th>status</th><th>metric</th>" +
      "<th>value [95% CI]</th><th>chance</th><th>examples (lost)</th></tr>" + d.scores.map(function (s) {
        var ms = Object.keys(s.metrics);
        return ms.map(function (m, i) {
          var v = s.metrics[m];
          return "<tr>" + (i === 0 ? '<td rowspan="' + ms.length + '">' + esc(s.scorer) + '</td><td rowspan="' + ms.length +
            '">' + esc(s.explainer) + '</td><td rowspan="' + ms.length + '" class="status-' + esc(s.status) + '">' +
            esc(s.status) + (s.error ? ": " + esc(s.error) : "") + "</td>" : "") + "<td>" + esc(m) + '</td><td class="num">' +
            num(v[0]) + " [" + num(v[1]) + ", " + num(v[2]) + ']</td><td class="num">' + num(v[3]) + "</td>" +
            (i === 0 ? '<td rowspan="' + ms.length + '" class="num">' + s.n_examples + " (" + s.n_lost + ")</td>" : "") + "</tr>";
        }).join("");
      }).join("") + "</table>" : "<p>not scored</p>";
    out += '<div class="grid"><div>' + windows(d.activating, "Activating examples") + "</div><div>" +
      windows(d.contrast, "Contrast examples") + "</div></div>";
    out += "<h3>Decoder neighbours</h3>";
    out += d.neighbours.length ? "<table><tr><th>latent</th><th>decoder cosine</th><th>explanation</th></tr>" +
      d.neighbours.map(function (n) {
        return '<tr><td><a href="#latent/' + encodeURIComponent(d.hookpoint) + "/" + n.latent + '">' + n.latent +
          '</a></td><td class="num">' + num(n.similarity) + "</td><td>" + esc(explanationOf(hpIndex, n.latent) || "–") + "</td></tr>";
      }).join("") + "</table>" : "<p>none recorded (no neighbour contrast windows)</p>";
    if (d.output) {
      var toks = function (list) {
        return list && list.length ? list.map(function (t) { return "<code>" + esc(JSON.stringify(t)) + "</code>"; }).join(" ") : "–";
      };
      out += "<h3>Output views</h3><table>" +
        "<tr><th>logit lens: promoted</th><td>" + toks(d.output.lens_top) + "</td></tr>" +
        "<tr><th>logit lens: suppressed</th><td>" + toks(d.output.lens_bottom) + "</td></tr>" +
        "<tr><th>rising most under steering</th><td>" + toks(d.output.steer_top) + "</td></tr></table>";
    }
    return out;
  }

  setup();
})();
