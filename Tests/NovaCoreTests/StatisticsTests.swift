import NovaCore
import Testing

@Suite("Statistics", .timeLimit(.minutes(1)))
struct StatisticsTests {
  @Test func nearestRankPercentilesAreObservedValues() {
    let values = (1...100).map(Double.init)
    #expect(Statistics.percentile(sorted: values, 0.5) == 50)
    #expect(Statistics.percentile(sorted: values, 0.95) == 95)
    #expect(Statistics.percentile(sorted: values, 0.99) == 99)
    #expect(Statistics.percentile(sorted: values, 1) == 100)
    #expect(Statistics.percentile(sorted: values, 0) == 1)
    #expect(Statistics.percentile(sorted: [1, 2, 3, 4], 0.5) == 2)
    #expect(Statistics.percentile(sorted: [7], 0.99) == 7)
    #expect(Statistics.percentile(sorted: [], 0.5) == nil)
  }

  @Test func medianIsTheMiddleOrTheMeanOfTheMiddleTwo() {
    #expect(Statistics.median([3, 1, 2]) == 2)
    #expect(Statistics.median([4, 1, 3, 2]) == 2.5)
    #expect(Statistics.median([Double]()) == nil)
    #expect(Statistics.median([5, 1, 9, 3]) == 4)
    #expect(Statistics.median([Int]()) == nil)
  }
}
