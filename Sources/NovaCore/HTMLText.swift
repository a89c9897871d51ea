/// Text made safe for HTML, for every page Nova renders (the LUX page, the console).
public enum HTMLText {
  /// `text` escaped for HTML text and attribute values (`&`, `<`, `>`, `"`, `'`).
  public static func escape(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for character in text {
      switch character {
      case "&": out += "&amp;"
      case "<": out += "&lt;"
      case ">": out += "&gt;"
      case "\"": out += "&quot;"
      case "'": out += "&#39;"
      default: out.append(character)
      }
    }
    return out
  }
}
