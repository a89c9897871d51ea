import Foundation
import NovaCore

/// The LUX compliance page: server-rendered HTML with inline SVG charts and inline CSS, no
/// scripts and no external assets, so it works offline; semantic sections, tables with headers,
/// text next to every colour, readable on a phone and a laptop. Every figure carries
/// `data-figure` and `data-value` so that a browser test can hold it against `/v1/compliance`.
public enum LUXPage {
  /// The page for `report`.
  public static func html(_ report: ComplianceReport) -> String {
    var body = ""
    body += header(report)
    body += auditSection(report.audit)
    body += policySection(report.policy)
    body += decisionsSection(report.decisions)
    body += alertsSection(report.alerts)
    body += baselineSection(report.baseline)
    body += reviewsSection(report.reviews, links: report.links)
    return """
      <!doctype html>
      <html lang="en">
      <head>
      <meta charset="utf-8">
      <meta name="viewport" content="width=device-width, initial-scale=1">
      <title>Nova compliance (LUX)</title>
      <style>\(css)</style>
      </head>
      <body>
      <a class="skip" href="#main">Skip to the figures</a>
      <main id="main">
      \(body)
      </main>
      <footer><p>Generated \(escape(report.generated_at)) by Nova. The same figures: <a href="/v1/compliance">/v1/compliance</a> (JSON).</p></footer>
      </body>
      </html>

      """
  }

  static let css = """
    :root{color-scheme:light;--ink:#1a1a1a;--muted:#4a4a4a;--ok:#0b6e2e;--bad:#a4161a;--warn:#8a4b00;--line:#c9c9c9;--bg:#ffffff;--panel:#f4f5f7}
    *{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
    main{max-width:1100px;margin:0 auto;padding:1rem;display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(min(100%,30rem),1fr))}
    header{grid-column:1/-1}h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.2rem;margin:0 0 .5rem}
    section{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:1rem;min-width:0}
    .figure{font-size:2rem;font-weight:700}.ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}.muted{color:var(--muted)}
    table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .4rem;border-bottom:1px solid var(--line);vertical-align:top}
    th{font-weight:600}code{font-size:.9em;word-break:break-all}svg{max-width:100%;height:auto;display:block}
    .skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem}
    a{color:#0b4f9c}a:focus,a:hover{outline:2px solid #0b4f9c}footer{max-width:1100px;margin:0 auto;padding:0 1rem 2rem;color:var(--muted)}
    .wide{grid-column:1/-1}
    """

  static func escape(_ text: String) -> String { HTMLText.escape(text) }

  static func percent(_ ratio: Double?) -> String {
    guard let ratio else { return "n/a" }
    return String(format: "%.1f %%", ratio * 100)
  }

  static func number(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(format: "%.2f", value)
  }

  /// A figure: its text, and its raw value for machines.
  static func figure(_ name: String, value: String, text: String, status: String = "") -> String {
    "<p class=\"figure \(status)\" data-figure=\"\(escape(name))\" data-value=\"\(escape(value))\">\(escape(text))</p>"
  }

  static func header(_ report: ComplianceReport) -> String {
    let healthy = report.audit.coverage >= 1 && report.audit.checkpoint?.signature_valid != false && report.policy.drifted != true
    return """
      <header>
      <h1>Nova compliance (LUX)</h1>
      <p class="\(healthy ? "ok" : "bad")" data-figure="overall" data-value="\(healthy ? "ok" : "attention")"><strong>\(healthy ? "All checks pass" : "Needs attention")</strong>: audit coverage, audit chain and policy drift.</p>
      <p class="muted">Figures as of \(escape(report.generated_at)).</p>
      </header>

      """
  }

  /// A line chart of `points` (values 0...1 unless `range` says otherwise).
  static func sparkline(_ points: [ComplianceReport.Point], label: String, range: ClosedRange<Double> = 0...1) -> String {
    let width = 480.0
    let height = 120.0
    guard points.count >= 2 else {
      return "<p class=\"muted\">Not enough samples for a trend yet (\(points.count)).</p>"
    }
    let lowest = min(range.lowerBound, points.map(\.value).min() ?? 0)
    let highest = max(range.upperBound, points.map(\.value).max() ?? 1)
    let span = max(highest - lowest, 1e-9)
    let coordinates = points.enumerated().map { index, point in
      let x = 30 + Double(index) / Double(points.count - 1) * (width - 40)
      let y = 10 + (1 - (point.value - lowest) / span) * (height - 30)
      return String(format: "%.1f,%.1f", x, y)
    }
    return """
      <svg viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-labelledby="trend-title trend-desc">
      <title id="trend-title">\(escape(label))</title>
      <desc id="trend-desc">From \(escape(points.first!.time)) (\(percent(points.first!.value))) to \(escape(points.last!.time)) (\(percent(points.last!.value))), \(points.count) samples.</desc>
      <line x1="30" y1="10" x2="\(Int(width) - 10)" y2="10" stroke="#c9c9c9"/>
      <line x1="30" y1="\(Int(height) - 20)" x2="\(Int(width) - 10)" y2="\(Int(height) - 20)" stroke="#c9c9c9"/>
      <text x="0" y="14" font-size="11" fill="#4a4a4a">\(escape(number(highest * 100)))%</text>
      <text x="0" y="\(Int(height) - 16)" font-size="11" fill="#4a4a4a">\(escape(number(lowest * 100)))%</text>
      <polyline fill="none" stroke="#0b4f9c" stroke-width="2" points="\(coordinates.joined(separator: " "))"/>
      </svg>
      """
  }

  static func auditSection(_ audit: ComplianceReport.Audit) -> String {
    let status = audit.coverage >= 1 ? "ok" : "bad"
    var out = "<section aria-labelledby=\"audit-h\"><h2 id=\"audit-h\">Audit trail coverage</h2>\n"
    out += figure("audit.coverage", value: String(audit.coverage), text: percent(audit.coverage), status: status)
    out += "<p>\(audit.audited_transitions) audited job transitions; \(audit.jobs) jobs; "
    out +=
      "<span data-figure=\"audit.unaudited_jobs\" data-value=\"\(audit.unaudited_jobs)\">\(audit.unaudited_jobs)</span> without the entry for their current state"
    out += audit.unaudited_jobs > 0 ? " (<code>nova audit coverage</code> names them).</p>\n" : ".</p>\n"
    out += sparkline(audit.coverage_trend, label: "Audit coverage over time")
    out += "</section>\n<section aria-labelledby=\"chain-h\"><h2 id=\"chain-h\">Audit chain</h2>\n"
    out += figure("audit.entries", value: String(audit.entries), text: "\(audit.entries) entries")
    if let checkpoint = audit.checkpoint {
      let valid = checkpoint.signature_valid
      out += "<table><caption class=\"muted\">Last signed checkpoint</caption><tbody>"
      out +=
        "<tr><th scope=\"row\">Tree size</th><td data-figure=\"audit.checkpoint.size\" data-value=\"\(checkpoint.size)\">\(checkpoint.size)</td></tr>"
      out += "<tr><th scope=\"row\">Signed</th><td>\(escape(checkpoint.created_at))</td></tr>"
      out += "<tr><th scope=\"row\">Root (SHA-256)</th><td><code>\(escape(checkpoint.root))</code></td></tr>"
      out +=
        "<tr><th scope=\"row\">Signature</th><td class=\"\(valid ? "ok" : "bad")\" data-figure=\"audit.checkpoint.signature_valid\" data-value=\"\(valid)\">\(valid ? "valid (Ed25519, this server's key; the entries give the signed root)" : "INVALID: the signature or the entries do not match")</td></tr>"
      out +=
        "<tr><th scope=\"row\">Entries since</th><td data-figure=\"audit.entries_since_checkpoint\" data-value=\"\(audit.entries_since_checkpoint)\">\(audit.entries_since_checkpoint)</td></tr>"
      out += "</tbody></table>\n"
    } else {
      out +=
        "<p class=\"warn\" data-figure=\"audit.checkpoint.size\" data-value=\"0\">No signed checkpoint yet (nova serve signs one every minute when the log grew).</p>\n"
    }
    out += "<p class=\"muted\">Check it all with <code>nova audit verify</code>.</p></section>\n"
    return out
  }

  static func policySection(_ policy: ComplianceReport.Policy) -> String {
    var out = "<section aria-labelledby=\"policy-h\"><h2 id=\"policy-h\">Policy drift</h2>\n"
    switch policy.drifted {
    case true?: out += figure("policy.drifted", value: "true", text: "Drifted", status: "bad")
    case false?: out += figure("policy.drifted", value: "false", text: "As approved", status: "ok")
    case nil: out += figure("policy.drifted", value: "unknown", text: "No approved baseline", status: "warn")
    }
    out += "<table><tbody>"
    out +=
      "<tr><th scope=\"row\">Active version</th><td><code data-figure=\"policy.version\" data-value=\"\(escape(policy.version))\">\(escape(policy.version))</code></td></tr>"
    out +=
      "<tr><th scope=\"row\">Approved version</th><td><code>\(escape(policy.approved_version ?? "none given (--policy-baseline)"))</code></td></tr>"
    out +=
      "<tr><th scope=\"row\">OPA bundle revision</th><td><code>\(escape(policy.opa_revision ?? "none"))</code>\(policy.approved_opa_revision.map { " (approved <code>\(escape($0))</code>)" } ?? "")</td></tr>"
    out += "<tr><th scope=\"row\">Active since</th><td>\(escape(policy.active_since))</td></tr>"
    out += "<tr><th scope=\"row\">Source</th><td>\(escape(policy.source))\(policy.enforce ? "" : " (shadow mode: not enforced)")</td></tr>"
    out += "</tbody></table>\n"
    if !policy.differences.isEmpty {
      out += "<ul>" + policy.differences.map { "<li class=\"bad\">\(escape($0))</li>" }.joined() + "</ul>\n"
    }
    return out + "</section>\n"
  }

  static func decisionsSection(_ decisions: ComplianceReport.Decisions) -> String {
    var out = "<section aria-labelledby=\"decisions-h\"><h2 id=\"decisions-h\">Decisions in the last \(decisions.window_hours) h</h2>\n"
    out += "<p><span class=\"figure ok\" data-figure=\"decisions.allowed\" data-value=\"\(decisions.allowed)\">\(decisions.allowed)</span> allowed, "
    out += "<span class=\"figure bad\" data-figure=\"decisions.denied\" data-value=\"\(decisions.denied)\">\(decisions.denied)</span> denied</p>\n"
    let largest = max(1, decisions.by_source.map { $0.allowed + $0.denied }.max() ?? 1)
    let rowHeight = 28
    let height = max(1, decisions.by_source.count) * rowHeight + 10
    out +=
      "<svg viewBox=\"0 0 480 \(height)\" role=\"img\" aria-labelledby=\"dec-title\"><title id=\"dec-title\">Decisions by source: allowed and denied</title>"
    for (index, row) in decisions.by_source.enumerated() {
      let y = index * rowHeight + 5
      let allowedWidth = Double(row.allowed) / Double(largest) * 220
      let deniedWidth = Double(row.denied) / Double(largest) * 220
      out += "<text x=\"0\" y=\"\(y + 16)\" font-size=\"13\" fill=\"#1a1a1a\">\(escape(row.source))</text>"
      out += String(format: "<rect x=\"80\" y=\"%d\" width=\"%.1f\" height=\"18\" fill=\"#0b6e2e\"/>", y, allowedWidth)
      out += String(format: "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"18\" fill=\"#a4161a\"/>", 80 + allowedWidth, y, deniedWidth)
      out += String(
        format: "<text x=\"%.1f\" y=\"%d\" font-size=\"12\" fill=\"#1a1a1a\">%d allowed, %d denied</text>", 86 + allowedWidth + deniedWidth, y + 14,
        row.allowed, row.denied)
    }
    out +=
      "</svg>\n<table><caption class=\"muted\">By source</caption><thead><tr><th scope=\"col\">Source</th><th scope=\"col\">Allowed</th><th scope=\"col\">Denied</th></tr></thead><tbody>"
    for row in decisions.by_source {
      out +=
        "<tr><th scope=\"row\">\(escape(row.source))</th><td data-figure=\"decisions.\(escape(row.source)).allowed\" data-value=\"\(row.allowed)\">\(row.allowed)</td><td data-figure=\"decisions.\(escape(row.source)).denied\" data-value=\"\(row.denied)\">\(row.denied)</td></tr>"
    }
    return out + "</tbody></table></section>\n"
  }

  static func bar(_ label: String, ratio: Double?, id: String) -> String {
    let width = (ratio ?? 0) * 300
    return """
      <svg viewBox="0 0 480 30" role="img" aria-labelledby="\(id)-title"><title id="\(id)-title">\(escape(label)): \(percent(ratio))</title>
      <rect x="0" y="5" width="300" height="18" fill="#e2e4e8"/><rect x="0" y="5" width="\(String(format: "%.1f", width))" height="18" fill="\((ratio ?? 0) >= 0.99 ? "#0b6e2e" : "#8a4b00")"/>
      <text x="310" y="19" font-size="13" fill="#1a1a1a">\(escape(percent(ratio)))</text></svg>
      """
  }

  static func alertsSection(_ alerts: ComplianceReport.Alerts) -> String {
    var out = "<section aria-labelledby=\"alerts-h\"><h2 id=\"alerts-h\">Alert SLA (last \(alerts.window_days) days)</h2>\n"
    out +=
      "<p><span data-figure=\"alerts.firing\" data-value=\"\(alerts.firing)\" class=\"figure \(alerts.firing == 0 ? "ok" : "bad")\">\(alerts.firing)</span> firing now; "
    out += "<span data-figure=\"alerts.fired\" data-value=\"\(alerts.fired)\">\(alerts.fired)</span> fired, "
    out += "<span data-figure=\"alerts.escalated\" data-value=\"\(alerts.escalated)\">\(alerts.escalated)</span> escalated.</p>\n"
    out += "<h3>Acknowledged within \(number(alerts.acknowledge_within_s / 60)) min</h3>"
    out +=
      "<p data-figure=\"alerts.acknowledge_compliance\" data-value=\"\(alerts.acknowledge_compliance.map { String($0) } ?? "null")\">\(alerts.acknowledged_within_sla) of \(alerts.fired): \(percent(alerts.acknowledge_compliance))</p>"
    out += bar("Acknowledged in time", ratio: alerts.acknowledge_compliance, id: "ack")
    out += "<h3>Resolved within \(number(alerts.resolve_within_s / 60)) min</h3>"
    out +=
      "<p data-figure=\"alerts.resolve_compliance\" data-value=\"\(alerts.resolve_compliance.map { String($0) } ?? "null")\">\(alerts.resolved_within_sla) in time: \(percent(alerts.resolve_compliance))</p>"
    out += bar("Resolved in time", ratio: alerts.resolve_compliance, id: "resolve")
    return out + "</section>\n"
  }

  static func baselineSection(_ baseline: ComplianceReport.Baseline?) -> String {
    var out = "<section aria-labelledby=\"baseline-h\"><h2 id=\"baseline-h\">Last baseline comparison</h2>\n"
    guard let baseline else {
      return out
        + "<p class=\"muted\" data-figure=\"baseline.breached\" data-value=\"none\">No comparison yet: <code>nova bench baseline --compare NAME</code>.</p></section>\n"
    }
    out += figure(
      "baseline.breached", value: String(baseline.breached), text: baseline.breached ? "Breached" : "Within thresholds",
      status: baseline.breached ? "bad" : "ok")
    out += "<p>Against <strong>\(escape(baseline.baseline))</strong>, \(escape(baseline.compared_at)).</p>\n"
    out +=
      "<table><thead><tr><th scope=\"col\">Measure</th><th scope=\"col\">Change</th><th scope=\"col\">Threshold</th><th scope=\"col\">Status</th></tr></thead><tbody>"
    for delta in baseline.deltas {
      out += "<tr><th scope=\"row\">\(escape(delta.measure))</th>"
      out +=
        "<td data-figure=\"baseline.\(escape(delta.measure))\" data-value=\"\(delta.delta_percent)\">\(String(format: "%+.1f %%", delta.delta_percent))</td>"
      out += "<td>\(delta.threshold_percent.map { "±" + number($0) + " %" } ?? "n/a")</td>"
      out += "<td class=\"\(delta.breached ? "bad" : "ok")\">\(delta.breached ? "breach" : "ok")</td></tr>"
    }
    return out + "</tbody></table></section>\n"
  }

  static func reviewsSection(_ reviews: [Review], links: ComplianceReport.Links) -> String {
    var out = "<section class=\"wide\" aria-labelledby=\"reviews-h\"><h2 id=\"reviews-h\">Reviews and evidence</h2>\n"
    out +=
      "<p><a href=\"\(escape(links.evidence))\" data-figure=\"links.evidence\" data-value=\"\(escape(links.evidence))\">Download an evidence bundle</a> (signed, deterministic; needs a token allowed <code>evidence.export</code>) · "
    out +=
      "<a href=\"\(escape(links.review_schedule))\" data-figure=\"links.review_schedule\" data-value=\"\(escape(links.review_schedule))\">Review schedule</a>"
    if let dashboard = links.dashboard { out += " · <a href=\"\(escape(dashboard))\">Grafana dashboard</a>" }
    out +=
      "</p>\n<table><thead><tr><th scope=\"col\">Review</th><th scope=\"col\">Owner</th><th scope=\"col\">Cadence</th><th scope=\"col\">Evidence</th><th scope=\"col\">Commands</th></tr></thead><tbody>"
    for review in reviews {
      out +=
        "<tr><th scope=\"row\">\(escape(review.name))</th><td>\(escape(review.owner_role))</td><td>\(escape(review.cadence))</td><td>\(escape(review.evidence))</td><td>"
      out += review.commands.map { "<code>\(escape($0))</code>" }.joined(separator: "<br>") + "</td></tr>"
    }
    return out + "</tbody></table></section>\n"
  }
}
