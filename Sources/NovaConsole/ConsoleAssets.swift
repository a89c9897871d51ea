/// The console's stylesheet and script, served by Nova itself (the CSP allows nothing else).
public enum ConsoleAssets {
  /// `/console/assets/console.css`.
  public static let css = """
    :root{color-scheme:light;--ink:#1a1a1a;--muted:#4a4a4a;--ok:#0b6e2e;--bad:#a4161a;--warn:#8a4b00;--line:#c9c9c9;--bg:#fff;--panel:#f4f5f7;--link:#0b4f9c}
    *{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
    .top{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.5rem;padding:.5rem 1rem;border-bottom:1px solid var(--line);background:var(--panel)}
    .brand{font-weight:700;font-size:1.2rem;text-decoration:none;color:var(--ink)}
    nav ul{display:flex;flex-wrap:wrap;gap:.25rem 1rem;list-style:none;margin:0;padding:0}
    nav a{color:var(--link);text-decoration:none;padding:.2rem .1rem}nav a[aria-current=page]{font-weight:700;border-bottom:2px solid var(--link)}
    .who{margin-left:auto;display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
    main{max-width:1200px;margin:0 auto;padding:1rem}h1{font-size:1.5rem;margin:.2rem 0 1rem}h2{font-size:1.15rem;margin:1.2rem 0 .5rem}
    .grid{display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(min(100%,16rem),1fr))}
    .card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;min-width:0}
    .figure{font-size:1.8rem;font-weight:700;margin:.2rem 0}
    .ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}.muted{color:var(--muted)}
    .table-wrap{overflow-x:auto}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
    th{font-weight:600;background:var(--panel)}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
    code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}code{word-break:break-all}
    pre{background:var(--panel);border:1px solid var(--line);padding:.6rem;overflow:auto;max-height:28rem;white-space:pre-wrap;word-break:break-word}
    .badge{display:inline-block;padding:0 .45rem;border-radius:999px;border:1px solid currentColor;font-size:.85em}
    .s-succeeded,.s-verified,.s-live{color:var(--ok)}.s-dead,.s-failed,.s-firing,.s-unverified,.s-lapsed{color:var(--bad)}.s-running,.s-acknowledged,.s-pending{color:var(--warn)}
    form.inline{display:inline}button,input,select{font:inherit;padding:.3rem .6rem;border:1px solid #767676;border-radius:4px;background:#fff;color:var(--ink)}
    button{cursor:pointer;background:#eef2f8}button.danger{border-color:var(--bad);color:var(--bad)}button:focus,input:focus,select:focus,a:focus{outline:3px solid var(--link);outline-offset:1px}
    .filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-end;margin-bottom:1rem}.filters label{display:flex;flex-direction:column;font-size:.9em}
    .notice{padding:.5rem .8rem;border:1px solid var(--ok);border-radius:6px;background:#eef8f0}.notice.error{border-color:var(--bad);background:#fbeeee}
    .skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem}
    .actions{display:flex;flex-wrap:wrap;gap:.5rem;margin:.5rem 0}.login{max-width:28rem;margin:3rem auto}.login input{width:100%}
    svg{max-width:100%;height:auto;display:block}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0;min-width:0;word-break:break-word}
    @media (max-width:640px){.who{margin-left:0}th,td{padding:.3rem}}
    """

  /// `/console/assets/console.js`: live figures over server-sent events and followed job
  /// output. Every page works without it.
  public static let javascript = """
    "use strict";
    (function () {
      var live = document.body.getAttribute("data-live");
      if (live && window.EventSource) {
        var source = new EventSource(live);
        source.addEventListener("figures", function (event) {
          var figures = JSON.parse(event.data);
          Object.keys(figures).forEach(function (key) {
            document.querySelectorAll('[data-live-id="' + key + '"]').forEach(function (element) {
              element.textContent = String(figures[key]);
            });
          });
          var stamp = document.getElementById("live-stamp");
          if (stamp) { stamp.textContent = "live, updated " + new Date().toLocaleTimeString(); }
        });
      }
      var output = document.querySelector("pre[data-follow]");
      if (output && window.EventSource) {
        var follow = new EventSource(output.getAttribute("data-follow"));
        output.textContent = "";
        follow.addEventListener("output", function (event) {
          var chunk = JSON.parse(event.data);
          output.textContent += chunk.text;
          output.scrollTop = output.scrollHeight;
        });
        follow.addEventListener("end", function () {
          follow.close();
          var note = document.getElementById("follow-state");
          if (note) { note.textContent = "The attempt is over; this is all of its output."; }
        });
      }
      var all = document.getElementById("select-all");
      if (all) {
        all.hidden = false;
        all.addEventListener("change", function () {
          document.querySelectorAll('input[name="id"]').forEach(function (box) { box.checked = all.checked; });
        });
      }
    })();
    """
}
