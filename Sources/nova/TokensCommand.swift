import ArgumentParser
import Foundation
import NovaCore
import NovaPolicy
import NovaSecurity

struct TokensCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tokens",
    abstract: "Manage API tokens (viewer, operator, admin, worker).",
    subcommands: [Create.self, List.self, Revoke.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create a token and print it once (only its hash is stored).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Option(help: "A name for the token (unique; letters, digits, - _ . @).") var name: String
    @Option(
      help:
        "viewer (reads), operator (also submits, cancels, retries), admin (also manages tokens), or worker (claims jobs over HTTP and reports on them)."
    )
    var role: String

    func run() async throws {
      guard let parsed = Role(rawValue: role) else {
        throw NovaError.invalidInput(field: "--role", message: "'\(role)' is not \(Role.names)")
      }
      let security = try await store.openSecurity()
      try await store.authorize("tokens.manage", PolicyResource(kind: "token", id: name))
      let created = try await security.tokens.create(name: name, role: parsed)
      if output.json {
        try printJSON(TokenOutput(token: created.token, name: created.record.name, role: parsed.rawValue))
      } else {
        print(created.token)
        FileHandle.standardError.write(Data("token '\(name)' (\(parsed.rawValue)) created; it is shown only this once\n".utf8))
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List tokens (never their secrets).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
      let security = try await store.openSecurity()
      try await store.authorize("tokens.manage", PolicyResource(kind: "token"))
      let tokens = try await security.tokens.list()
      if output.json {
        try printJSON(tokens)
        return
      }
      for token in tokens {
        let state = token.revokedAt.map { "revoked \(AuditTime.string($0.millisecondsSince1970))" } ?? "active"
        print("\(token.name)\t\(token.role.rawValue)\tnova_\(token.id)_…\t\(state)")
      }
    }
  }

  struct Revoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Revoke a token by name; it stops working at once.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The token's name.") var name: String

    func run() async throws {
      let security = try await store.openSecurity()
      try await store.authorize("tokens.manage", PolicyResource(kind: "token", id: name))
      try await security.tokens.revoke(name: name)
      print("revoked \(name)")
    }
  }
}

struct TokenOutput: Encodable {
  var token: String
  var name: String
  var role: String
}
