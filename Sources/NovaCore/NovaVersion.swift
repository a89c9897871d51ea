/// Nova's version string.
public enum NovaVersion {
  public static let string = "0.1.0"
  /// The source revision, when the build was given one (`NOVA_GIT_REVISION` at run time wins).
  public static let revision = "unknown"
}
