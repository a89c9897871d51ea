import Crypto
import Foundation

/// A signed tree head in the C2SP tlog-checkpoint format, wrapped in a C2SP signed note:
/// origin line, tree size, base64 root hash, a blank line, then `— name base64(keyID‖signature)`.
///
/// The checkpoints a log stores are chained: an extension line `nova-chain N HASH` gives the
/// checkpoint's sequence number and the SHA-256 of its predecessor's whole signed note, so a
/// checkpoint removed from the middle, or put in another order, is seen by whoever checks them.
public struct Checkpoint: Sendable, Equatable {
  /// Names the log (for example `nova.example/audit`).
  public var origin: String
  public var size: Int
  public var rootHash: MerkleTree.Hash
  /// Position in the log's chain of stored checkpoints (1 for the first); nil when not chained.
  public var sequence: Int64?
  /// SHA-256 of the previous checkpoint's signed note (32 zero bytes before the first).
  public var previous: [UInt8]?

  public init(origin: String, size: Int, rootHash: MerkleTree.Hash, sequence: Int64? = nil, previous: [UInt8]? = nil) {
    self.origin = origin
    self.size = size
    self.rootHash = rootHash
    self.sequence = sequence
    self.previous = previous
  }

  /// The prefix of the extension line that chains stored checkpoints.
  static let chainPrefix = "nova-chain "

  /// What a chained checkpoint names as the predecessor of the first one.
  public static let noPredecessor = [UInt8](repeating: 0, count: 32)

  /// SHA-256 of a signed note, as the next checkpoint of a chain names it.
  public static func noteHash(_ note: String) -> [UInt8] { Array(SHA256.hash(data: Array(note.utf8))) }

  /// The signed body: the three checkpoint lines and the chain line, each ending in a newline.
  public var body: String {
    var text = "\(origin)\n\(size)\n\(Data(rootHash).base64EncodedString())\n"
    if let sequence {
      text += "\(Self.chainPrefix)\(sequence) \(Data(previous ?? Self.noPredecessor).base64EncodedString())\n"
    }
    return text
  }

  /// The note signed by `key`.
  public func signed(by key: NoteSigner) throws -> String {
    let signature = try key.sign(Array(body.utf8))
    return body + "\n" + "\u{2014} \(key.name) \(Data(key.keyID + signature).base64EncodedString())\n"
  }

  /// The tree size a note states (its second line), read without checking the signature.
  public static func size(ofNote note: String) -> Int64? {
    let lines = note.split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false)
    return lines.count >= 2 ? Int64(lines[1]) : nil
  }

  /// A checkpoint note that failed to parse or verify, and why.
  public struct VerificationError: Error, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
  }

  /// Parses a signed note and checks its signature by `verifier`.
  public static func verify(note: String, verifier: NoteVerifier) throws(VerificationError) -> Checkpoint {
    guard let split = note.range(of: "\n\n") else { throw VerificationError("no blank line between the checkpoint and its signatures") }
    let body = String(note[..<split.lowerBound]) + "\n"
    let lines = body.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
    guard lines.count >= 3 else { throw VerificationError("a checkpoint has an origin, a size and a root hash line") }
    guard let size = Int(lines[1]), size >= 0 else { throw VerificationError("tree size '\(lines[1])' is not a number") }
    guard let root = Data(base64Encoded: String(lines[2])), root.count == 32 else {
      throw VerificationError("root hash '\(lines[2])' is not base64 of 32 bytes")
    }
    var sequence: Int64?
    var previous: [UInt8]?
    for line in lines.dropFirst(3) where line.hasPrefix(chainPrefix) {
      let fields = line.dropFirst(chainPrefix.count).split(separator: " ")
      guard fields.count == 2, let number = Int64(fields[0]), number >= 1, let hash = Data(base64Encoded: String(fields[1])),
        hash.count == 32
      else { throw VerificationError("chain line '\(line)' is not 'nova-chain SEQUENCE BASE64-SHA256'") }
      sequence = number
      previous = Array(hash)
    }
    let signatures = note[split.upperBound...].split(separator: "\n")
    var sawName = false
    for line in signatures {
      let parts = line.split(separator: " ")
      guard parts.count == 3, parts[0] == "\u{2014}", parts[1] == verifier.name else { continue }
      sawName = true
      guard let blob = Data(base64Encoded: String(parts[2])), blob.count == 4 + 64 else {
        throw VerificationError("signature by \(verifier.name) is malformed")
      }
      guard Array(blob.prefix(4)) == verifier.keyID else { continue }
      guard verifier.verify(signature: Array(blob.dropFirst(4)), for: Array(body.utf8)) else {
        throw VerificationError("signature by \(verifier.name) does not match the checkpoint")
      }
      return Checkpoint(origin: String(lines[0]), size: size, rootHash: Array(root), sequence: sequence, previous: previous)
    }
    throw VerificationError(sawName ? "no signature by this key of \(verifier.name)" : "no signature by \(verifier.name)")
  }
}

/// The Ed25519 key that signs notes, with its C2SP key name and id.
public struct NoteSigner: Sendable {
  public let name: String
  /// The raw 32-byte Ed25519 seed (swift-crypto's key types are not Sendable).
  let seed: [UInt8]

  public init(name: String, privateKey: Curve25519.Signing.PrivateKey) {
    self.name = name
    self.seed = Array(privateKey.rawRepresentation)
  }

  /// A new random key.
  public static func generate(name: String) -> NoteSigner {
    NoteSigner(name: name, privateKey: Curve25519.Signing.PrivateKey())
  }

  public var privateKey: Curve25519.Signing.PrivateKey {
    // The seed came from a valid key, so it always parses.
    try! Curve25519.Signing.PrivateKey(rawRepresentation: seed)
  }

  /// The public half.
  public var verifier: NoteVerifier { NoteVerifier(name: name, publicKey: privateKey.publicKey) }

  /// SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[0..<4], per C2SP signed-note.
  public var keyID: [UInt8] { verifier.keyID }

  /// An Ed25519 signature of `message` (deterministic, RFC 8032).
  public func sign(_ message: [UInt8]) throws -> [UInt8] { Array(try privateKey.signature(for: message)) }
}

/// Checks notes signed by one Ed25519 key.
public struct NoteVerifier: Sendable {
  public let name: String
  /// The raw 32-byte Ed25519 public key.
  public let publicKeyBytes: [UInt8]

  public init(name: String, publicKey: Curve25519.Signing.PublicKey) {
    self.name = name
    self.publicKeyBytes = Array(publicKey.rawRepresentation)
  }

  public var publicKey: Curve25519.Signing.PublicKey {
    // The bytes came from a valid key, so they always parse.
    try! Curve25519.Signing.PublicKey(rawRepresentation: publicKeyBytes)
  }

  /// Parses a C2SP verifier key: `name+hexkeyid+base64(0x01 ‖ public key)`.
  public init(verifierKey: String) throws {
    let parts = verifierKey.split(separator: "+", maxSplits: 2)
    guard parts.count == 3, let blob = Data(base64Encoded: String(parts[2])), blob.count == 33, blob.first == 0x01 else {
      throw Checkpoint.VerificationError("'\(verifierKey)' is not a name+keyid+key verifier key")
    }
    self.init(name: String(parts[0]), publicKey: try Curve25519.Signing.PublicKey(rawRepresentation: blob.dropFirst()))
    guard String(parts[1]) == keyID.map({ String(format: "%02x", $0) }).joined() else {
      throw Checkpoint.VerificationError("the key id in '\(verifierKey)' does not match its key")
    }
  }

  public var keyID: [UInt8] {
    var hasher = SHA256()
    hasher.update(data: Array(name.utf8) + [0x0A, 0x01] + publicKeyBytes)
    return Array(hasher.finalize().prefix(4))
  }

  /// The C2SP verifier key string, to hand to reviewers.
  public var verifierKey: String {
    "\(name)+\(keyID.map { String(format: "%02x", $0) }.joined())+\(Data([0x01] + publicKeyBytes).base64EncodedString())"
  }

  /// True when `signature` is this key's Ed25519 signature of `message`.
  public func verify(signature: [UInt8], for message: [UInt8]) -> Bool {
    publicKey.isValidSignature(signature, for: message)
  }
}
