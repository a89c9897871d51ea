import Crypto

/// RFC 6962 (Certificate Transparency) Merkle trees over audit entries: leaf = SHA-256(0x00‖entry),
/// node = SHA-256(0x01‖left‖right), and the inclusion and consistency proofs of RFC 9162.
public enum MerkleTree {
  public typealias Hash = [UInt8]

  /// SHA-256 of the empty string: the root of an empty tree.
  public static let emptyRoot: Hash = Array(SHA256.hash(data: [UInt8]()))

  /// The hash of a leaf.
  public static func leafHash(_ entry: some Sequence<UInt8>) -> Hash {
    leafHash(Array(entry))
  }

  /// The hash of a leaf given as part of a buffer, without copying it.
  public static func leafHash(_ entry: ArraySlice<UInt8>) -> Hash {
    withLeafHash(entry) { Array($0) }
  }

  /// Calls `body` with the hash of a leaf, made without an array of its own.
  public static func withLeafHash<T>(_ entry: ArraySlice<UInt8>, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
    var hasher = SHA256()
    withUnsafeBytes(of: UInt8(0)) { hasher.update(bufferPointer: $0) }
    entry.withUnsafeBytes { hasher.update(bufferPointer: $0) }
    return try hasher.finalize().withUnsafeBytes(body)
  }

  /// The hash of a leaf, without copying its bytes.
  public static func leafHash(_ entry: [UInt8]) -> Hash { leafHash(entry[...]) }

  /// The hash of an inner node.
  public static func nodeHash(_ left: Hash, _ right: Hash) -> Hash {
    var hasher = SHA256()
    hasher.update(data: [0x01])
    hasher.update(data: left)
    hasher.update(data: right)
    return Array(hasher.finalize())
  }

  /// The largest power of two smaller than `n` (n > 1).
  static func split(_ n: Int) -> Int {
    var k = 1
    while k << 1 < n { k <<= 1 }
    return k
  }

  /// MTH over leaf hashes.
  public static func root(_ leaves: ArraySlice<Hash>) -> Hash {
    switch leaves.count {
    case 0: return emptyRoot
    case 1: return leaves[leaves.startIndex]
    default:
      let k = split(leaves.count)
      let middle = leaves.startIndex + k
      return nodeHash(root(leaves[leaves.startIndex..<middle]), root(leaves[middle...]))
    }
  }

  /// The audit path of leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1).
  public static func inclusionProof(index: Int, leaves: ArraySlice<Hash>) -> [Hash] {
    guard leaves.count > 1 else { return [] }
    let k = split(leaves.count)
    let middle = leaves.startIndex + k
    if index < k {
      return inclusionProof(index: index, leaves: leaves[leaves.startIndex..<middle]) + [root(leaves[middle...])]
    }
    return inclusionProof(index: index - k, leaves: leaves[middle...]) + [root(leaves[leaves.startIndex..<middle])]
  }

  /// Checks an audit path (RFC 9162 §2.1.3.2).
  public static func verifyInclusion(index: Int, size: Int, leafHash: Hash, proof: [Hash], root: Hash) -> Bool {
    guard index >= 0, index < size else { return false }
    var fn = index
    var sn = size - 1
    var r = leafHash
    for p in proof {
      if sn == 0 { return false }
      if fn & 1 == 1 || fn == sn {
        r = nodeHash(p, r)
        if fn & 1 == 0 {
          repeat {
            fn >>= 1
            sn >>= 1
          } while fn & 1 == 0 && fn != 0
        }
      } else {
        r = nodeHash(r, p)
      }
      fn >>= 1
      sn >>= 1
    }
    return sn == 0 && r == root
  }

  /// The proof that the tree of the first `oldSize` leaves is a prefix of the tree of `leaves`
  /// (RFC 6962 §2.1.2).
  public static func consistencyProof(oldSize: Int, leaves: ArraySlice<Hash>) -> [Hash] {
    guard oldSize > 0, oldSize < leaves.count else { return [] }
    return subproof(oldSize, leaves, complete: true)
  }

  private static func subproof(_ m: Int, _ leaves: ArraySlice<Hash>, complete: Bool) -> [Hash] {
    let n = leaves.count
    if m == n { return complete ? [] : [root(leaves)] }
    let k = split(n)
    let middle = leaves.startIndex + k
    if m <= k {
      return subproof(m, leaves[leaves.startIndex..<middle], complete: complete) + [root(leaves[middle...])]
    }
    return subproof(m - k, leaves[middle...], complete: false) + [root(leaves[leaves.startIndex..<middle])]
  }

  /// The leaf ranges whose subtree hashes form the audit path of leaf `index` in a tree of
  /// `size` leaves, in proof order: a proof computed from streamed leaves in flat memory.
  public static func inclusionRanges(index: Int, size: Int) -> [Range<Int>] {
    precondition(index >= 0 && index < size)
    func path(_ m: Int, _ range: Range<Int>) -> [Range<Int>] {
      let n = range.count
      if n <= 1 { return [] }
      let k = split(n)
      let split = range.lowerBound + k
      if m < k { return path(m, range.lowerBound..<split) + [split..<range.upperBound] }
      return path(m - k, split..<range.upperBound) + [range.lowerBound..<split]
    }
    return path(index, 0..<size)
  }

  /// The leaf ranges whose subtree hashes form the consistency proof from `oldSize` to
  /// `newSize` leaves, in proof order (RFC 6962 §2.1.2).
  public static func consistencyRanges(oldSize: Int, newSize: Int) -> [Range<Int>] {
    precondition(oldSize > 0 && oldSize <= newSize)
    func subproof(_ m: Int, _ range: Range<Int>, _ complete: Bool) -> [Range<Int>] {
      let n = range.count
      if m == n { return complete ? [] : [range] }
      let k = split(n)
      let split = range.lowerBound + k
      if m <= k { return subproof(m, range.lowerBound..<split, complete) + [split..<range.upperBound] }
      return subproof(m - k, split..<range.upperBound, false) + [range.lowerBound..<split]
    }
    return subproof(oldSize, 0..<newSize, true)
  }

  /// Checks a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
  public static func verifyConsistency(oldSize: Int, newSize: Int, oldRoot: Hash, newRoot: Hash, proof: [Hash]) -> Bool {
    guard oldSize > 0, oldSize <= newSize else { return false }
    if oldSize == newSize { return proof.isEmpty && oldRoot == newRoot }
    guard !proof.isEmpty else { return false }
    var path = proof
    if oldSize & (oldSize - 1) == 0 { path.insert(oldRoot, at: 0) }
    var fn = oldSize - 1
    var sn = newSize - 1
    while fn & 1 == 1 {
      fn >>= 1
      sn >>= 1
    }
    var fr = path[0]
    var sr = path[0]
    for c in path.dropFirst() {
      if sn == 0 { return false }
      if fn & 1 == 1 || fn == sn {
        fr = nodeHash(c, fr)
        sr = nodeHash(c, sr)
        if fn & 1 == 0 {
          repeat {
            fn >>= 1
            sn >>= 1
          } while fn & 1 == 0 && fn != 0
        }
      } else {
        sr = nodeHash(sr, c)
      }
      fn >>= 1
      sn >>= 1
    }
    return fr == oldRoot && sr == newRoot && sn == 0
  }
}

/// Computes a tree's root from leaves streamed in order, keeping only O(log n) hashes, so that
/// verifying millions of audit entries takes flat memory.
public struct MerkleAccumulator: Sendable {
  /// Roots of complete subtrees, largest first, with their sizes.
  private var stack: [(size: Int, hash: MerkleTree.Hash)] = []
  public private(set) var count = 0

  public init() {}

  /// Adds the next leaf hash.
  public mutating func append(leafHash: MerkleTree.Hash) {
    var node = (size: 1, hash: leafHash)
    while let last = stack.last, last.size == node.size {
      stack.removeLast()
      node = (last.size * 2, MerkleTree.nodeHash(last.hash, node.hash))
    }
    stack.append(node)
    count += 1
  }

  /// Adds the next leaf hash and calls `node` with the range and hash of every complete subtree
  /// it closes (the leaf itself first).
  public mutating func append(leafHash: MerkleTree.Hash, node report: (Range<Int>, MerkleTree.Hash) -> Void) {
    var node = (size: 1, hash: leafHash)
    report(count..<count + 1, leafHash)
    while let last = stack.last, last.size == node.size {
      stack.removeLast()
      node = (last.size * 2, MerkleTree.nodeHash(last.hash, node.hash))
      report(count + 1 - node.size..<count + 1, node.hash)
    }
    stack.append(node)
    count += 1
  }

  /// The nodes on the right edge of the tree so far (`start..<count`, each the root of the
  /// complete subtrees from `start` on), largest first.
  public var rightEdge: [(range: Range<Int>, hash: MerkleTree.Hash)] {
    var result: [(range: Range<Int>, hash: MerkleTree.Hash)] = []
    var end = count
    var hash: MerkleTree.Hash?
    for entry in stack.reversed() {
      hash = hash.map { MerkleTree.nodeHash(entry.hash, $0) } ?? entry.hash
      end -= entry.size
      result.append((end..<count, hash!))
    }
    return result.reversed()
  }

  /// Continues a tree of `count` leaves from its `frontier` (the roots of its complete
  /// subtrees, largest first), as a stored checkpoint keeps them.
  public init?(count: Int, frontier: [MerkleTree.Hash]) {
    var sizes: [Int] = []
    var bit = 1 << 62
    while bit > 0 {
      if count & bit != 0 { sizes.append(bit) }
      bit >>= 1
    }
    guard sizes.count == frontier.count, frontier.allSatisfy({ $0.count == 32 }) else { return nil }
    stack = Array(zip(sizes, frontier).map { (size: $0.0, hash: $0.1) })
    self.count = count
  }

  /// The roots of the complete subtrees so far, largest first.
  public var frontier: [MerkleTree.Hash] { stack.map(\.hash) }

  /// The root of the leaves added so far.
  public var root: MerkleTree.Hash {
    guard var hash = stack.last?.hash else { return MerkleTree.emptyRoot }
    for entry in stack.dropLast().reversed() { hash = MerkleTree.nodeHash(entry.hash, hash) }
    return hash
  }
}
