import Crypto
import Foundation
import NovaCore

/// The Ed25519 key that signs checkpoints and evidence, kept in a file in the C2SP note
/// private key format (`PRIVATE+KEY+name+keyid+base64(0x01‖seed)`) that only its owner may read.
public enum SigningKeyFile {
  /// Loads the key at `path`, or generates one there (mode 0600) when there is none.
  public static func loadOrCreate(path: String, name: String) throws -> NoteSigner {
    if FileManager.default.fileExists(atPath: path) { return try load(path: path) }
    let signer = NoteSigner.generate(name: name)
    let text = encode(signer) + "\n"
    // Written whole under a name of its own, then linked into place: a process opening the same fresh data directory
    // at once finds either no key or a complete one, never an empty file, and link refuses to replace another's key.
    let staging = "\(path).\(getpid()).\(UInt64.random(in: 0...UInt64.max)).tmp"
    let fd = open(staging, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else {
      throw NovaError.storage("cannot create the signing key \(path): \(String(cString: strerror(errno)))")
    }
    defer { unlink(staging) }
    let written = text.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    let synced = written == text.utf8.count && fsync(fd) == 0
    let writeError = errno
    close(fd)
    guard synced else {
      throw NovaError.storage("cannot write the signing key \(path): \(String(cString: strerror(writeError)))")
    }
    guard link(staging, path) == 0 else {
      if errno == EEXIST { return try load(path: path) }
      throw NovaError.storage("cannot create the signing key \(path): \(String(cString: strerror(errno)))")
    }
    return signer
  }

  /// Loads the key at `path`; refuses a file that others may read.
  public static func load(path: String) throws -> NoteSigner {
    var info = stat()
    guard stat(path, &info) == 0 else {
      throw NovaError.storage("cannot read the signing key \(path): \(String(cString: strerror(errno)))")
    }
    if info.st_mode & 0o077 != 0 {
      throw NovaError.storage(
        "the signing key \(path) may be read by others (mode \(String(info.st_mode & 0o777, radix: 8))); run chmod 600 \(path)")
    }
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
      throw NovaError.storage("cannot read the signing key \(path)")
    }
    return try decode(text.trimmingCharacters(in: .whitespacesAndNewlines), source: path)
  }

  /// The file's text for `signer`.
  public static func encode(_ signer: NoteSigner) -> String {
    let hex = signer.keyID.map { String(format: "%02x", $0) }.joined()
    return "PRIVATE+KEY+\(signer.name)+\(hex)+\(Data([0x01] + signer.seed).base64EncodedString())"
  }

  /// Parses the file's text; `source` names it in errors.
  public static func decode(_ text: String, source: String) throws -> NoteSigner {
    let parts = text.split(separator: "+", maxSplits: 4, omittingEmptySubsequences: false)
    guard parts.count == 5, parts[0] == "PRIVATE", parts[1] == "KEY",
      let blob = Data(base64Encoded: String(parts[4])), blob.count == 33, blob.first == 0x01,
      let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: blob.dropFirst())
    else {
      throw NovaError.malformedInput(field: source, message: "not a signing key (PRIVATE+KEY+name+keyid+base64)")
    }
    let signer = NoteSigner(name: String(parts[2]), privateKey: key)
    guard signer.keyID.map({ String(format: "%02x", $0) }).joined() == parts[3] else {
      throw NovaError.malformedInput(field: source, message: "the key id \(parts[3]) does not match the key")
    }
    return signer
  }
}

extension NoteVerifier {
  /// The public key as PEM (SubjectPublicKeyInfo), for `openssl pkeyutl -verify`.
  public var pem: String {
    let der: [UInt8] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00] + publicKeyBytes
    return "-----BEGIN PUBLIC KEY-----\n\(Data(der).base64EncodedString())\n-----END PUBLIC KEY-----\n"
  }
}
