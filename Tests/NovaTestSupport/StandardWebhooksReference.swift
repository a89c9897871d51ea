import Foundation
import Testing

/// The Standard Webhooks reference verifier (PyPI's `standardwebhooks`, in the virtual environment
/// scripts/test.sh makes), run on requests Nova sent: a receiver with the library accepts them.
public enum StandardWebhooksReference {
  /// The environment's Python: `NOVA_WEBHOOKS_PYTHON`, else `.build/webhooks-venv/bin/python` in
  /// the checkout; nil when it is not there.
  public static var python: String? {
    let python =
      ProcessInfo.processInfo.environment["NOVA_WEBHOOKS_PYTHON"]
      ?? repository.appendingPathComponent(".build/webhooks-venv/bin/python").path
    return FileManager.default.isExecutableFile(atPath: python) ? python : nil
  }

  /// The verifier can run (or CI requires it).
  public static let available = TestServers.requireAll || python != nil
  public static let missing: Comment =
    "Python's standardwebhooks is not installed (python3 -m venv .build/webhooks-venv, then its bin/pip install standardwebhooks)"

  private static var repository: URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  }

  /// Reads a request from the file named by argv[1]; prints `verified`, or `refused:` and why.
  /// A `whsec_` secret is given to the library as text (it decodes the base64); any other is
  /// the key's bytes, as Nova takes it.
  private static let script = """
    import base64, json, sys
    from standardwebhooks import Webhook
    request = json.load(open(sys.argv[1]))
    secret = request["secret"]
    key = secret if secret.startswith("whsec_") else secret.encode()
    try:
        Webhook(key).verify(base64.b64decode(request["body"]), dict(request["headers"]), json_parse=False)
        print("verified")
    except Exception as error:
        print("refused: %s: %s" % (type(error).__name__, error))
    """

  /// What the library says of a request as received: nil when it verifies, else why not.
  public static func refusal(headers: [(String, String)], body: [UInt8], secret: String) throws -> String? {
    guard let python else { throw TestServerError("the standardwebhooks environment is missing (\(missing))") }
    let directory = try TemporaryDirectory.make("nova-webhooks")
    defer { try? FileManager.default.removeItem(at: directory) }
    let request: [String: Any] = [
      "headers": headers.map { [$0.0, $0.1] }, "body": Data(body).base64EncodedString(), "secret": secret,
    ]
    let file = directory.appendingPathComponent("request.json")
    try JSONSerialization.data(withJSONObject: request).write(to: file)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = ["-c", script, file.path]
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let answer = text.trimmingCharacters(in: .whitespacesAndNewlines)
    guard process.terminationStatus == 0, answer.hasPrefix("verified") || answer.hasPrefix("refused:") else {
      throw TestServerError("the standardwebhooks verifier failed (exit \(process.terminationStatus)): \(answer)")
    }
    return answer == "verified" ? nil : answer
  }
}
