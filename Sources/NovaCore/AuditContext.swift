/// Who is acting, for the audit trail. The HTTP layer binds the caller's token name, the CLI
/// the local user, a worker its id; whatever a task does inside `$actor.withValue` is recorded
/// under that name.
public enum AuditContext {
  @TaskLocal public static var actor: String = "system"
}
