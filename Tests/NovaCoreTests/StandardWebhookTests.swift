import Foundation
import NovaCore
import Testing

/// Nova's one way to sign what it sends: Standard Webhooks, checked against the spec's vectors.
@Suite("Standard Webhooks signatures")
struct StandardWebhookTests {
  /// The test vector of the Standard Webhooks and svix libraries.
  @Test func signsTheSpecsVector() throws {
    let key = try StandardWebhook.key(secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    let signature = StandardWebhook.signature(
      id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: Array(#"{"test": 2432232314}"#.utf8), key: key)
    #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    // A secret without the prefix is the key as its bytes (the Python library's Webhook(b"k3y")).
    #expect(try StandardWebhook.key(secret: "k3y") == Array("k3y".utf8))
    let plain = try StandardWebhook.headers(id: "id-1", timestamp: 1_700_000_000, body: Array("{}".utf8), secret: "k3y")
    #expect(plain.map { $0.0 } == ["webhook-id", "webhook-timestamp", "webhook-signature"])
    #expect(plain.map { $0.1 } == ["id-1", "1700000000", "v1,t4BAtWy5wzYQhX1yDdTcAaFChD9+n/Rfzj20ZNyl6yA="])
  }

  @Test func verifiesIdTimeBodyAndSecret() throws {
    let body = Array(#"{"alerts":[]}"#.utf8)
    let secret = "whsec_" + Data((1...32).map { UInt8($0) }).base64EncodedString()
    let headers = try StandardWebhook.headers(id: "nova-1-7", timestamp: 1_800_000_000, body: body, secret: secret)
    #expect(StandardWebhook.verify(headers: headers, body: body, secret: secret, now: 1_800_000_100))
    // Header names in any case; any one of several signatures (a key rotation).
    let shouted = headers.map { ($0.0.uppercased(), $0.0 == "webhook-signature" ? "v1,AAAA " + $0.1 : $0.1) }
    #expect(StandardWebhook.verify(headers: shouted, body: body, secret: secret, now: 1_800_000_000))
    #expect(!StandardWebhook.verify(headers: headers, body: body, secret: secret, now: 1_800_000_301))
    #expect(!StandardWebhook.verify(headers: headers, body: body, secret: secret, now: 1_799_999_699))
    #expect(!StandardWebhook.verify(headers: headers, body: body + [0x20], secret: secret, now: 1_800_000_000))
    #expect(!StandardWebhook.verify(headers: headers, body: body, secret: "whsec_AAAA", now: 1_800_000_000))
    let otherID = headers.map { $0.0 == "webhook-id" ? ($0.0, "nova-1-8") : $0 }
    #expect(!StandardWebhook.verify(headers: otherID, body: body, secret: secret, now: 1_800_000_000))
    #expect(!StandardWebhook.verify(headers: Array(headers.dropFirst()), body: body, secret: secret, now: 1_800_000_000))
    #expect(!StandardWebhook.verify(id: "x", timestamp: "soon", signature: "v1,AAAA", body: body, secret: secret, now: 0))
  }

  @Test func refusesSecretsThatCannotSign() throws {
    // Unpadded base64 is taken, as the spec's libraries take it.
    #expect(try StandardWebhook.key(secret: "whsec_AAECAw") == [0, 1, 2, 3])
    for bad in ["", "whsec_", "whsec_not base64!"] {
      #expect(throws: NovaError.self, "\(bad)") { _ = try StandardWebhook.key(secret: bad) }
    }
    do {
      _ = try StandardWebhook.key(secret: "whsec_s3cr3t!")
      Issue.record("a whsec_ secret that is not base64 was taken")
    } catch {
      #expect(!error.description.contains("s3cr3t"), "the error quotes the secret: \(error)")
    }
  }
}
