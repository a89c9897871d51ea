import NovaCore
import Testing

@Suite("One-shot answer", .timeLimit(.minutes(1)))
struct OneShotAnswerTests {
  @Test func anAnswerGivenBeforeTheWaitIsKeptForIt() async {
    let answer = OneShotAnswer<Int>()
    #expect(!answer.isResolved)
    #expect(answer.resolve(1))
    #expect(answer.isResolved)
    #expect(await answer.wait() == 1)
  }

  @Test func theFirstAnswerWinsAndALaterOneIsRefused() async {
    let answer = OneShotAnswer<String>()
    let waiting = Task { await answer.wait() }
    // Whether the wait has begun or not, the first answer is the one it gets.
    await Task.yield()
    #expect(answer.resolve("first"))
    #expect(!answer.resolve("second"))
    #expect(await waiting.value == "first")
    #expect(await answer.wait() == "first")
  }

  @Test func aWaitBegunFirstIsWokenByTheAnswer() async throws {
    let answer = OneShotAnswer<[Int]>()
    async let waited = answer.wait()
    try await Task.sleep(for: .milliseconds(20))
    #expect(!answer.isResolved)
    answer.resolve([1, 2])
    #expect(await waited == [1, 2])
  }
}
