import Foundation
import NovaCore

/// A place outside the database where every signed checkpoint is also kept, so that whoever
/// can rewrite the database cannot rewrite its anchors too.
public protocol CheckpointMirror: Sendable {
  /// Where the mirror is, for messages.
  var location: String { get }
  /// Keeps `checkpoint` (again is harmless; a different note of the same size is an error).
  func publish(_ checkpoint: StoredCheckpoint) async throws
  /// The checkpoints it holds, smallest first; nil when it cannot be read back (a URL).
  func checkpoints() async throws -> [MirroredCheckpoint]?
  /// The largest checkpoint it holds; nil when it holds none or cannot be read back.
  func latest() async throws -> MirroredCheckpoint?
}

extension CheckpointMirror {
  public func latest() async throws -> MirroredCheckpoint? { try await checkpoints()?.last }
}

/// A directory of signed notes, one file per checkpoint (`checkpoint-<size>.note`, the size
/// zero-padded so that names sort by size), written atomically and never rewritten.
public struct CheckpointDirectory: CheckpointMirror {
  public let path: String

  public init(path: String) {
    self.path = path
  }

  public var location: String { path }

  /// The file name of the checkpoint of `size` entries.
  public static func fileName(size: Int64) -> String { "checkpoint-\(String(format: "%016lld", size)).note" }

  public func publish(_ checkpoint: StoredCheckpoint) async throws {
    let file = URL(fileURLWithPath: path).appendingPathComponent(Self.fileName(size: checkpoint.size))
    if let existing = try? String(contentsOf: file, encoding: .utf8) {
      guard existing == checkpoint.note else {
        throw NovaError.storage("\(file.path) holds another checkpoint of size \(checkpoint.size): the log was rewritten")
      }
      return
    }
    do {
      try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
      let staging = URL(fileURLWithPath: path).appendingPathComponent(".\(Self.fileName(size: checkpoint.size)).\(getpid()).tmp")
      try Data(checkpoint.note.utf8).write(to: staging)
      // link(2) fails when the name exists, so a checkpoint already kept is never replaced.
      defer { unlink(staging.path) }
      if link(staging.path, file.path) != 0 && errno != EEXIST {
        throw NovaError.storage("cannot write \(file.path): \(String(cString: strerror(errno)))")
      }
    } catch let error as NovaError {
      throw error
    } catch {
      throw NovaError.storage("cannot write the checkpoint mirror \(path): \(error.localizedDescription)")
    }
  }

  /// The checkpoints in the directory (none while it does not exist yet).
  public func checkpoints() async throws -> [MirroredCheckpoint]? {
    try noteNames().map(read)
  }

  /// The largest checkpoint, read alone (names sort by size).
  public func latest() async throws -> MirroredCheckpoint? {
    try noteNames().last.map(read)
  }

  /// The names of the checkpoint files, smallest first.
  private func noteNames() throws -> [String] {
    if !FileManager.default.fileExists(atPath: path) { return [] }
    do {
      return try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasPrefix("checkpoint-") && $0.hasSuffix(".note") }.sorted()
    } catch {
      throw NovaError.invalidInput(field: "checkpoint directory", message: "cannot read \(path): \(error.localizedDescription)")
    }
  }

  private func read(_ name: String) throws -> MirroredCheckpoint {
    let file = URL(fileURLWithPath: path).appendingPathComponent(name)
    guard let note = try? String(contentsOf: file, encoding: .utf8) else {
      throw NovaError.invalidInput(field: "checkpoint directory", message: "cannot read \(file.path) as text")
    }
    return MirroredCheckpoint(name: name, note: note)
  }
}

extension AuditLog {
  /// Brings `mirror` up to date with the stored checkpoints, after checking that the database
  /// still holds the mirror's latest checkpoint (else the database was rewritten, and nothing
  /// more is signed or mirrored until someone looks; `verify --checkpoint-dir` checks the rest).
  /// `published` is the largest size known to be mirrored already (for mirrors that cannot be
  /// read back); returns the new one. Each pass reads one mirrored note and only the newer rows.
  @discardableResult
  public func synchronize(mirror: any CheckpointMirror, publishedThrough published: Int64 = 0) async throws -> Int64 {
    var through = published
    if let kept = try await mirror.latest() {
      guard let size = Checkpoint.size(ofNote: kept.note), try await checkpoint(size: size)?.note == kept.note else {
        throw NovaError.storage(
          "the database lacks checkpoint \(kept.name) of the mirror \(mirror.location): the audit log was rewritten; nothing more is signed until `nova audit verify --checkpoint-dir \(mirror.location)` is run and the cause found"
        )
      }
      through = max(through, size)
    }
    for checkpoint in try await checkpoints(after: through) {
      try await mirror.publish(checkpoint)
      through = checkpoint.size
    }
    return through
  }
}
