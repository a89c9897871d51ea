import Crypto
import Foundation
import NovaCore

/// A Dead Simple Signing Envelope (DSSE v1) carrying an in-toto statement, signed with Ed25519.
public struct DSSEEnvelope: Codable, Sendable, Equatable {
  /// One signature of the envelope.
  public struct Signature: Codable, Sendable, Equatable {
    public var keyid: String
    /// Base64 of the Ed25519 signature over the pre-authentication encoding.
    public var sig: String
  }

  public static let inTotoPayloadType = "application/vnd.in-toto+json"

  public var payloadType: String
  /// Base64 of the payload bytes.
  public var payload: String
  public var signatures: [Signature]

  /// PAE(type, body) = "DSSEv1 " len(type) " " type " " len(body) " " body: what is signed.
  public static func preAuthenticationEncoding(payloadType: String, payload: [UInt8]) -> [UInt8] {
    Array("DSSEv1 \(payloadType.utf8.count) \(payloadType) \(payload.count) ".utf8) + payload
  }

  /// Signs `payload` with `signer`; the key id is the hex SHA-256 of the raw public key.
  public static func sign(payload: [UInt8], payloadType: String = inTotoPayloadType, signer: NoteSigner) throws -> DSSEEnvelope {
    let signature = try signer.sign(preAuthenticationEncoding(payloadType: payloadType, payload: payload))
    return DSSEEnvelope(
      payloadType: payloadType, payload: Data(payload).base64EncodedString(),
      signatures: [Signature(keyid: keyID(signer.verifier), sig: Data(signature).base64EncodedString())])
  }

  /// The key id Nova gives a public key.
  public static func keyID(_ verifier: NoteVerifier) -> String {
    SHA256.hash(data: verifier.publicKeyBytes).map { String(format: "%02x", $0) }.joined()
  }

  /// The payload bytes when a signature by `verifier` checks out; otherwise throws saying why.
  public func verifiedPayload(verifier: NoteVerifier) throws -> [UInt8] {
    guard let body = Data(base64Encoded: payload) else {
      throw NovaError.malformedInput(field: "envelope", message: "the envelope's payload is not base64")
    }
    let message = Self.preAuthenticationEncoding(payloadType: payloadType, payload: Array(body))
    for signature in signatures {
      guard let raw = Data(base64Encoded: signature.sig) else { continue }
      if verifier.verify(signature: Array(raw), for: message) { return Array(body) }
    }
    let expected = Self.keyID(verifier)
    if !signatures.contains(where: { $0.keyid == expected }) {
      throw SignatureMismatch(
        message: "signed by another key (key id \(signatures.map(\.keyid).joined(separator: ", "))), not by the trusted key \(expected)")
    }
    throw SignatureMismatch(message: "the signature by key \(expected) does not verify: the statement was changed after signing")
  }
}

/// A signature that does not verify with the trusted key: made by another key, or over other bytes.
public struct SignatureMismatch: Error, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}
