import Foundation
import Lab

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// The pages bcpipe writes are well-formed XML as well as HTML: parsed here into a tree so tests
/// check their structure, not just their text.
final class HTMLNode {
    let name: String
    let attributes: [String: String]
    var children: [HTMLNode] = []
    var text = ""

    init(name: String, attributes: [String: String]) {
        self.name = name
        self.attributes = attributes
    }

    /// All text inside, children's included.
    var allText: String { text + children.map(\.allText).joined() }

    func all(_ name: String) -> [HTMLNode] {
        (self.name == name ? [self] : []) + children.flatMap { $0.all(name) }
    }

    func element(id: String) -> HTMLNode? {
        if attributes["id"] == id { return self }
        for c in children { if let e = c.element(id: id) { return e } }
        return nil
    }

    /// The rows of a table's body, each as its cells' texts.
    var rows: [[String]] {
        (all("tbody").first?.children ?? []).filter { $0.name == "tr" }.map { $0.children.map(\.allText) }
    }

    static func parse(_ text: String) throws -> HTMLNode {
        let builder = Builder()
        let parser = XMLParser(data: Data(text.utf8))
        parser.delegate = builder
        guard parser.parse(), let root = builder.root else {
            throw HTMLError(
                "not well-formed at line \(parser.lineNumber), column \(parser.columnNumber): \(parser.parserError.map { "\($0)" } ?? "?")"
            )
        }
        return root
    }

    struct HTMLError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    final class Builder: NSObject, XMLParserDelegate {
        var stack: [HTMLNode] = []
        var root: HTMLNode?
        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
            attributes: [String: String] = [:]
        ) {
            let node = HTMLNode(name: elementName, attributes: attributes)
            stack.last?.children.append(node)
            if root == nil { root = node }
            stack.append(node)
        }
        func parser(
            _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?
        ) {
            _ = stack.popLast()
        }
        func parser(_ parser: XMLParser, foundCharacters string: String) {
            stack.last?.text += string
        }
    }
}

/// Headless Chromium from Debian's packages, for the tests that render pages in a real browser.
enum Browser {
    /// The browser's path, installing it (as root, with apt-get) when it is missing.
    static let path: String? = {
        func find() -> String? {
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first {
                FileManager.default.isExecutableFile(atPath: $0)
            }
        }
        if let p = find() { return p }
        guard geteuid() == 0 else { return nil }
        _ = try? Processes.run(
            ["/usr/bin/apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
            environment: ["DEBIAN_FRONTEND": "noninteractive"], timeout: 600)
        return find()
    }()

    static var available: Bool { path != nil }

    /// What a test that needs the browser says when it is missing.
    static let missing =
        "Chromium is not installed and could not be installed here (not root?): run scripts/setup --tests, or apt-get install chromium"

    /// The DOM once the page has loaded (before a self-reloading page reloads), as HTML.
    static func dumpDOM(_ url: String) async throws -> String {
        // Its own warnings go to stderr: only stdout is the DOM.
        let out = try await Processes.output(
            [
                "/bin/bash", "-c", #""$0" "$@" 2>/dev/null"#, path!, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run",
                "--user-data-dir=\(FileManager.default.temporaryDirectory.path)/bcpipe-chromium-\(getpid())",
                "--dump-dom", url,
            ], timeout: 120)
        return out.text
    }
}
