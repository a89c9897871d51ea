import Crypto
import Foundation

/// How Nova signs what it sends to other services (`type: http` job kinds and alert webhooks):
/// the Standard Webhooks scheme (https://www.standardwebhooks.com), so that a receiver can check
/// both with one verifier, its own or a library's (Python's `standardwebhooks`, svix's).
///
/// `webhook-signature` is `v1,` and the base64 HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>`.
/// A secret that starts with `whsec_` stands for the base64 key after the prefix (how the spec's
/// libraries take it); any other secret is the key as its UTF-8 bytes.
public enum StandardWebhook {
  /// The message's id: the same on every retry of one message, so that a receiver can drop repeats.
  public static let idHeader = "webhook-id"
  /// When the message was signed, in Unix seconds.
  public static let timestampHeader = "webhook-timestamp"
  /// `v1,<base64 signature>`; a receiver accepts any of several, space-separated (a key rotation).
  public static let signatureHeader = "webhook-signature"
  /// What marks a secret given as base64 key bytes.
  public static let secretPrefix = "whsec_"
  /// How far (either way, in seconds) a timestamp may be from now for a receiver to accept it: the
  /// spec's 5 minutes, so that a captured call cannot be replayed later.
  public static let defaultTolerance: Int64 = 300

  /// The HMAC key a configured secret stands for; throws (without quoting the secret) when it is
  /// empty, or starts with `whsec_` and the rest is not base64.
  public static func key(secret: String) throws(NovaError) -> [UInt8] {
    guard secret.hasPrefix(secretPrefix) else {
      guard !secret.isEmpty else { throw .invalidInput(field: "secret", message: "is empty") }
      return Array(secret.utf8)
    }
    var encoded = String(secret.dropFirst(secretPrefix.count))
    // The spec's libraries also take the base64 without its padding.
    while encoded.utf8.count % 4 != 0 { encoded += "=" }
    guard let decoded = Data(base64Encoded: encoded), !decoded.isEmpty else {
      throw .invalidInput(field: "secret", message: "starts with \(secretPrefix), but what follows is not a base64 key")
    }
    return Array(decoded)
  }

  /// `v1,` and the base64 HMAC-SHA256 of `<id>.<timestamp>.<body>` under `key`.
  public static func signature(id: String, timestamp: Int64, body: [UInt8], key: [UInt8]) -> String {
    var message = Array("\(id).\(timestamp).".utf8)
    message.append(contentsOf: body)
    let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key))
    return "v1," + Data(mac).base64EncodedString()
  }

  /// The three headers that sign `body` as message `id`, sent at `timestamp` (Unix seconds).
  public static func headers(id: String, timestamp: Int64, body: [UInt8], secret: String) throws(NovaError) -> [(String, String)] {
    let hmacKey = try Self.key(secret: secret)
    return [
      (idHeader, id),
      (timestampHeader, String(timestamp)),
      (signatureHeader, Self.signature(id: id, timestamp: timestamp, body: body, key: hmacKey)),
    ]
  }

  /// What a receiver checks: one of the signatures is the body's under `secret` with this id and
  /// timestamp, and that timestamp is within `tolerance` seconds of `now` (Unix seconds).
  public static func verify(
    id: String?, timestamp: String?, signature: String?, body: [UInt8], secret: String, now: Int64,
    tolerance: Int64 = StandardWebhook.defaultTolerance
  ) -> Bool {
    guard let id, !id.isEmpty, let timestamp, let seconds = Int64(timestamp), let signature,
      seconds >= now - tolerance, seconds <= now + tolerance, let hmacKey = try? Self.key(secret: secret)
    else { return false }
    let expected = Array(Self.signature(id: id, timestamp: seconds, body: body, key: hmacKey).utf8)
    var matched = false
    for candidate in signature.split(separator: " ") {
      let given = Array(candidate.utf8)
      // Constant time over equal lengths; every candidate is compared in full.
      if given.count == expected.count, zip(given, expected).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 { matched = true }
    }
    return matched
  }

  /// ``verify(id:timestamp:signature:body:secret:now:tolerance:)`` on the headers as received
  /// (their names in any case).
  public static func verify(
    headers: [(String, String)], body: [UInt8], secret: String, now: Int64, tolerance: Int64 = StandardWebhook.defaultTolerance
  ) -> Bool {
    func value(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
    return verify(
      id: value(idHeader), timestamp: value(timestampHeader), signature: value(signatureHeader), body: body, secret: secret, now: now,
      tolerance: tolerance)
  }
}
