import Foundation
import NovaCore
import NovaPolicy
import NovaTestSupport
import Testing

@Suite("Policy fixtures and the benchmark", .timeLimit(.minutes(5)))
struct PolicyToolsTests {
  @Test func fixturesParseAndNameTheirErrors() throws {
    let fixtures = try PolicyFixture.parse(
      """
      - name: trainer trains
        subject: agent:trainer
        roles: [trainer, viewer]
        action: submit
        resource: {kind: job, id: j1, attributes: {queue: gpu}}
        expect: allow
      - name: reader
        subject: token:r
        roles: viewer
        action: read
        expect: deny
      """, file: "f.yaml")
    #expect(fixtures.count == 2 && fixtures[0].expectAllow && !fixtures[1].expectAllow)
    #expect(fixtures[0].request.resource.attributes == ["queue": "gpu"] && fixtures[0].request.resource.id == "j1")
    #expect(fixtures[0].request.subject.roles == ["trainer", "viewer"] && fixtures[1].request.subject.roles == ["viewer"])
    #expect(fixtures[1].line == 7 && fixtures[1].request.resource.kind == "job")
    let bad: [(String, String)] = [
      ("name: x", "f.yaml:1:1: expected a list of cases"),
      ("- name: x\n  subject: s\n  action: a\n  expect: maybe\n", "f.yaml:4:11: [0].expect: 'maybe' is not allow or deny"),
      ("- name: x\n  action: a\n  expect: allow\n", "[0]: needs 'subject'"),
      ("- name: x\n  subject: s\n  action: a\n  expect: allow\n  colour: red\n", "[0]: unknown key 'colour'"),
      ("- name: x\n  subject: s\n  action: a\n  expect: allow\n  resource: {colour: red}\n", "[0].resource: unknown key 'colour'"),
      ("- name: x\n  subject: s\n  action: a\n  expect: allow\n  resource: {attributes: [1]}\n", "[0].resource.attributes: expected a mapping"),
      ("- name: x\n  subject: [s]\n  action: a\n  expect: allow\n", "[0].subject: expected a string"),
      ("- [1]\n", "[0]: expected a mapping"),
      ("- a: [\n", "YAML"),
    ]
    for (text, message) in bad {
      #expect(throws: PolicyFileError.self) { _ = try PolicyFixture.parse(text, file: "f.yaml") }
      do { _ = try PolicyFixture.parse(text, file: "f.yaml") } catch { #expect(error.description.contains(message), "\(error)") }
    }
    #expect(throws: PolicyFileError.self) { _ = try PolicyFixture.load(path: "/nonexistent") }
  }

}
