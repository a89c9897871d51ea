import Crypto
import Foundation

/// Makes the lease tokens handed to HTTP workers unforgeable: a store's fencing token is a small
/// count per job, so the token a worker sees is that count with an HMAC over the job's id and
/// the count (`"3.9f86d081884c7d65…"`). A worker can then report only on a job it was handed,
/// and a lease presented for another job does not open.
public struct LeaseSeal: Sendable {
  /// The raw key (swift-crypto's key types are not Sendable).
  private let key: [UInt8]

  /// A seal keyed from the installation's signing key, so that leases stay valid across restarts
  /// of the server.
  public init(signer: NoteSigner) {
    key = HKDF<SHA256>.deriveKey(
      inputKeyMaterial: SymmetricKey(data: signer.seed), info: Data("nova lease seal v1".utf8), outputByteCount: 32
    ).withUnsafeBytes { Array($0) }
  }

  /// A seal with a random key (a server without a data directory's key: leases last as long as
  /// the process).
  public init() { key = (0..<32).map { _ in UInt8.random(in: 0...255) } }

  /// The token a worker is given for fencing token `token` on job `id`, bound to `holder` (the
  /// API token that claimed it): a lease handed to one worker token does not open for another.
  public func seal(id: String, token: Int64, holder: String = "") -> String {
    "\(token).\(mac(id: id, token: token, holder: holder))"
  }

  /// The fencing token inside `text` when it was sealed for job `id` and `holder`; nil otherwise.
  public func open(_ text: String, id: String, holder: String = "") -> Int64? {
    guard let dot = text.firstIndex(of: "."), let token = Int64(text[..<dot]), token > 0 else { return nil }
    let presented = Array(text[text.index(after: dot)...].utf8)
    let expected = Array(mac(id: id, token: token, holder: holder).utf8)
    // Compared in constant time: the comparison must not tell how much of a guess was right.
    guard presented.count == expected.count else { return nil }
    var difference: UInt8 = 0
    for (a, b) in zip(presented, expected) { difference |= a ^ b }
    return difference == 0 ? token : nil
  }

  private func mac(id: String, token: Int64, holder: String) -> String {
    let message = holder.isEmpty ? "\(id):\(token)" : "\(id):\(token):\(holder)"
    let code = HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: SymmetricKey(data: key))
    return code.prefix(16).map { String(format: "%02x", $0) }.joined()
  }
}
