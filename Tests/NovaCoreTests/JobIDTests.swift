import Foundation
import NovaCore
import Testing

@Suite("Job ids")
struct JobIDTests {
  /// Issue #14 point 5: ids made in one millisecond, or after the clock stepped back, still
  /// strictly increase, and stay well-formed version 7 UUIDs.
  @Test func idsStrictlyIncreaseWithinAMillisecondAndWhenTheClockStepsBack() {
    let instant = Date(timeIntervalSince1970: 1_900_000_000)
    let ids = JobID.Generator()
    var previous = ids.next(now: instant)
    for index in 0..<20_000 {
      let now = index % 1000 == 999 ? instant.addingTimeInterval(-5) : instant
      let id = ids.next(now: now)
      #expect(id > previous, "\(id) after \(previous)")
      #expect(id.isWellFormed && Array(id.rawValue.utf8)[14] == UInt8(ascii: "7"))
      #expect("89ab".contains(Character(String(Array(id.rawValue)[19]))))
      previous = id
    }
    let later = ids.next(now: instant.addingTimeInterval(1))
    #expect(later > previous && later >= JobID.lowerBound(for: instant.addingTimeInterval(1)))
    // A clock set back by more than 10 s starts again from its own time.
    let reset = ids.next(now: instant.addingTimeInterval(-60))
    #expect(reset < JobID.lowerBound(for: instant) && reset >= JobID.lowerBound(for: instant.addingTimeInterval(-60)))
    #expect(JobID.generate(now: instant).isWellFormed)
  }

  /// Ids drawn across many refills of the generator's batch of random bits stay distinct in
  /// their random part: a new millisecond's ids share nothing but the time.
  @Test func idsOfNewMillisecondsDrawFreshRandomBits() {
    let ids = JobID.Generator()
    let start = Date(timeIntervalSince1970: 1_900_000_000)
    var tails = Set<Substring>()
    for index in 0..<200 {
      let id = ids.next(now: start.addingTimeInterval(Double(index) / 100))
      tails.insert(id.rawValue.dropFirst(15))
    }
    #expect(tails.count == 200)
  }

  /// An id made while the clock stood up to `maxLead` behind the generator's last id is still
  /// below the bound for the clock's time: a purge walking ids up to it misses no job.
  @Test func everyIdMadeByAnInstantIsBelowItsUpperBound() {
    let instant = Date(timeIntervalSince1970: 1_900_000_000)
    let ids = JobID.Generator()
    _ = ids.next(now: instant)
    // The clock steps back 9.9 s: the generator keeps counting up from `instant`.
    let made = ids.next(now: instant.addingTimeInterval(-9.9))
    #expect(made > JobID.lowerBound(for: instant))
    #expect(made < JobID.upperBound(madeBy: instant.addingTimeInterval(-9.9)))
    #expect(JobID.upperBound(madeBy: instant) > JobID.lowerBound(for: instant.addingTimeInterval(JobID.maxLead)))
  }
}
