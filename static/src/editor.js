// The file page's code editor: CodeMirror 6, bundled by esbuild (see the Makefile) into
// static/vendor/editor/editor.js as one IIFE that sets window.OpentermdEditor.
//
// CSP: the page allows scripts and styles from 'self' only. CodeMirror needs no eval, but it
// injects its styles at run time (style-mod): into a <style> element when it lives in the
// document, which `style-src 'self'` blocks, and into a constructable stylesheet
// (adoptedStyleSheets, not subject to CSP) when it lives in a shadow root. So the editor is
// mounted in an open shadow root on the host element.

import { Compartment, EditorState, Prec } from "@codemirror/state";
import {
  EditorView, crosshairCursor, drawSelection, dropCursor, highlightActiveLine,
  highlightActiveLineGutter, highlightSpecialChars, keymap, lineNumbers, rectangularSelection,
} from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab, isolateHistory } from "@codemirror/commands";
import { highlightSelectionMatches, searchKeymap } from "@codemirror/search";
import { closeBrackets, closeBracketsKeymap } from "@codemirror/autocomplete";
import {
  LanguageDescription, LanguageSupport, StreamLanguage, bracketMatching, defaultHighlightStyle, foldGutter,
  foldKeymap, indentOnInput, syntaxHighlighting,
} from "@codemirror/language";
import { oneDark } from "@codemirror/theme-one-dark";

import { cpp } from "@codemirror/lang-cpp";
import { css } from "@codemirror/lang-css";
import { html } from "@codemirror/lang-html";
import { java } from "@codemirror/lang-java";
import { javascript } from "@codemirror/lang-javascript";
import { json } from "@codemirror/lang-json";
import { markdown, markdownLanguage } from "@codemirror/lang-markdown";
import { php } from "@codemirror/lang-php";
import { python } from "@codemirror/lang-python";
import { rust } from "@codemirror/lang-rust";
import { sql } from "@codemirror/lang-sql";
import { xml } from "@codemirror/lang-xml";
import { yaml } from "@codemirror/lang-yaml";
import { csharp, kotlin, scala } from "@codemirror/legacy-modes/mode/clike";
import { cmake } from "@codemirror/legacy-modes/mode/cmake";
import { diff } from "@codemirror/legacy-modes/mode/diff";
import { dockerFile } from "@codemirror/legacy-modes/mode/dockerfile";
import { go } from "@codemirror/legacy-modes/mode/go";
import { lua } from "@codemirror/legacy-modes/mode/lua";
import { nginx } from "@codemirror/legacy-modes/mode/nginx";
import { powerShell } from "@codemirror/legacy-modes/mode/powershell";
import { properties } from "@codemirror/legacy-modes/mode/properties";
import { ruby } from "@codemirror/legacy-modes/mode/ruby";
import { shell } from "@codemirror/legacy-modes/mode/shell";
import { swift } from "@codemirror/legacy-modes/mode/swift";
import { toml } from "@codemirror/legacy-modes/mode/toml";

const legacy = (mode) => () => new LanguageSupport(StreamLanguage.define(mode));

// One row per language: its support, its file extensions, and whole file names that have none.
const LANGUAGES = [
  { name: "JavaScript", support: () => javascript({ jsx: true }), ext: ["js", "mjs", "cjs", "jsx"] },
  { name: "TypeScript", support: () => javascript({ typescript: true }), ext: ["ts", "mts", "cts"] },
  { name: "TSX", support: () => javascript({ typescript: true, jsx: true }), ext: ["tsx"] },
  { name: "Python", support: python, ext: ["py", "pyw", "pyi"], files: ["SConstruct", "SConscript"] },
  { name: "Markdown", support: () => markdown({ base: markdownLanguage, codeLanguages: fencedLanguages }),
    ext: ["md", "markdown", "mdown", "mkd"] },
  { name: "JSON", support: json, ext: ["json", "jsonc", "json5", "ipynb", "geojson", "webmanifest"],
    files: [".babelrc", ".eslintrc", ".prettierrc"] },
  { name: "HTML", support: html, ext: ["html", "htm", "xhtml", "jinja", "j2", "vue", "svelte"] },
  { name: "CSS", support: css, ext: ["css", "scss", "less"] },
  { name: "YAML", support: yaml, ext: ["yaml", "yml"], files: [".clang-format"] },
  { name: "SQL", support: sql, ext: ["sql"] },
  { name: "XML", support: xml, ext: ["xml", "svg", "xsd", "xsl", "xslt", "plist", "csproj", "rss", "atom"] },
  { name: "Rust", support: rust, ext: ["rs"] },
  { name: "C++", support: cpp, ext: ["c", "h", "cc", "cpp", "cxx", "hh", "hpp", "hxx", "ino", "m", "mm"] },
  { name: "Java", support: java, ext: ["java"] },
  { name: "PHP", support: php, ext: ["php", "phtml"] },
  { name: "Shell", support: legacy(shell), ext: ["sh", "bash", "zsh", "ksh", "fish", "command"],
    files: [".bashrc", ".bash_profile", ".profile", ".zshrc", ".zprofile", ".envrc"] },
  { name: "TOML", support: legacy(toml), ext: ["toml"], files: ["Pipfile", "poetry.lock", "Cargo.lock"] },
  { name: "Dockerfile", support: legacy(dockerFile), ext: ["dockerfile"], files: ["Dockerfile", "Containerfile"] },
  { name: "Go", support: legacy(go), ext: ["go"] },
  { name: "Ruby", support: legacy(ruby), ext: ["rb", "rake", "gemspec"], files: ["Gemfile", "Rakefile"] },
  { name: "Lua", support: legacy(lua), ext: ["lua"] },
  { name: "Swift", support: legacy(swift), ext: ["swift"] },
  { name: "Kotlin", support: legacy(kotlin), ext: ["kt", "kts", "gradle"] },
  { name: "Scala", support: legacy(scala), ext: ["scala", "sc", "sbt"] },
  { name: "C#", support: legacy(csharp), ext: ["cs"] },
  { name: "PowerShell", support: legacy(powerShell), ext: ["ps1", "psm1", "psd1"] },
  { name: "CMake", support: legacy(cmake), ext: ["cmake"], files: ["CMakeLists.txt"] },
  { name: "Nginx", support: legacy(nginx), ext: ["nginx"], files: ["nginx.conf"] },
  { name: "Diff", support: legacy(diff), ext: ["diff", "patch"] },
  { name: "Properties", support: legacy(properties),
    ext: ["ini", "cfg", "conf", "properties", "env", "editorconfig", "gitconfig"],
    files: [".env", ".gitconfig", ".editorconfig", ".npmrc", ".pypirc", "setup.cfg", "tox.ini"] },
];

// Fenced code blocks in Markdown get the same languages (```python, ```sh, ...).
const ALIASES = { Shell: ["shell", "console", "bash", "sh", "zsh"], "C++": ["c++"], "C#": ["csharp"] };
const fencedLanguages = LANGUAGES.map((row) => LanguageDescription.of({
  name: row.name,
  alias: [row.name.toLowerCase(), ...row.ext, ...(ALIASES[row.name] || [])],
  extensions: row.ext,
  load: async () => row.support(),
}));

function languageFor(filename) {
  const name = (filename || "").split(/[\\/]/).pop();
  const lower = name.toLowerCase();
  for (const row of LANGUAGES) {
    if ((row.files || []).some((file) => file.toLowerCase() === lower)) return row;
  }
  const dot = lower.lastIndexOf(".");
  const extension = dot > 0 ? lower.slice(dot + 1) : dot === 0 ? lower.slice(1) : "";
  if (!extension) return null;
  return LANGUAGES.find((row) => row.ext.includes(extension)) || null;
}

// Prose wraps; code keeps its lines (a horizontal scrollbar is better than a misleading wrap).
const WRAPPED = new Set(["Markdown"]);

const layout = EditorView.theme({
  "&": { height: "100%", fontSize: "0.9rem" },
  ".cm-scroller": {
    overflow: "auto",
    fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, 'Liberation Mono', monospace",
  },
  ".cm-content": { paddingBlock: "0.5rem" },
  "&.cm-focused": { outline: "1px solid var(--accent, #0969da)" },
});

// The page's palette (its CSS custom properties reach into the shadow root), so the editor sits
// in the page rather than on a slab of its own colour; the fallbacks are CodeMirror's own.
const pageColors = (dark) => Prec.high(EditorView.theme({
  "&": { backgroundColor: `var(--bg, ${dark ? "#282c34" : "#fff"})`, color: "var(--fg, inherit)" },
  ".cm-gutters": {
    backgroundColor: `var(--bg, ${dark ? "#282c34" : "#f5f5f5"})`,
    color: `var(--muted, ${dark ? "#7d8799" : "#6c6c6c"})`,
    borderRight: `1px solid var(--line, ${dark ? "#3b4048" : "#ddd"})`,
  },
}, { dark }));

const light = [syntaxHighlighting(defaultHighlightStyle, { fallback: true }), pageColors(false)];
const dark = [oneDark, pageColors(true)];
const darkQuery = typeof matchMedia === "function" ? matchMedia("(prefers-color-scheme: dark)") : null;
const themeFor = () => (darkQuery && darkQuery.matches ? dark : light);

/** The dominant line ending of `text`, so saving a CRLF file keeps it CRLF. */
function lineEnding(text) {
  const crlf = (text.match(/\r\n/g) || []).length;
  const lf = (text.match(/\n/g) || []).length - crlf;
  return crlf > lf ? "\r\n" : "\n";
}

function create(host, text, filename) {
  const saveHandlers = [];
  const changeHandlers = [];
  const theme = new Compartment();
  const row = languageFor(filename);
  let eol = lineEnding(text);

  const save = () => {
    saveHandlers.forEach((handler) => handler());
    return true; // handled: CodeMirror calls preventDefault, so the browser's Save dialog never opens
  };

  const extensions = [
    lineNumbers(),
    foldGutter(),
    highlightSpecialChars(),
    history(),
    drawSelection(),
    dropCursor(),
    EditorState.allowMultipleSelections.of(true),
    indentOnInput(),
    bracketMatching(),
    closeBrackets(),
    rectangularSelection(),
    crosshairCursor(),
    highlightActiveLine(),
    highlightActiveLineGutter(),
    highlightSelectionMatches(),
    Prec.highest(keymap.of([{ key: "Mod-s", run: save, preventDefault: true }])),
    keymap.of([
      ...closeBracketsKeymap, ...defaultKeymap, ...searchKeymap, ...historyKeymap, ...foldKeymap,
      indentWithTab,
    ]),
    layout,
    theme.of(themeFor()),
    EditorView.contentAttributes.of({ "aria-label": `Contents of ${filename || "the file"}` }),
    EditorView.updateListener.of((update) => {
      if (update.docChanged) changeHandlers.forEach((handler) => handler());
    }),
  ];
  if (row) extensions.push(row.support());
  if (!row || WRAPPED.has(row.name)) extensions.push(EditorView.lineWrapping);

  const root = host.shadowRoot || host.attachShadow({ mode: "open" });
  const view = new EditorView({ parent: root, root, state: EditorState.create({ doc: text, extensions }) });
  // Keys typed in the editor are the editor's: page shortcuts listening on the document would see
  // them retargeted to the host (not an editable element) and act on them.
  host.addEventListener("keydown", (event) => event.stopPropagation());

  // Its own undo step: never merged with the typing just before it.
  const replaceAll = (insert) => view.dispatch({
    changes: { from: 0, to: view.state.doc.length, insert },
    annotations: isolateHistory.of("full"),
  });

  if (darkQuery) {
    const follow = () => view.dispatch({ effects: theme.reconfigure(themeFor()) });
    if (darkQuery.addEventListener) darkQuery.addEventListener("change", follow);
  }

  return {
    /** The text with the file's own line endings (CodeMirror keeps lines, not separators). */
    getText: () => view.state.doc.toJSON().join(eol),
    /** Replace the whole text as one undoable change (Ctrl+Z brings back what was there). */
    setText(newText) {
      eol = lineEnding(newText);
      replaceAll(newText);
    },
    focus: () => view.focus(),
    /** An opaque marker of the current contents, for changedSince(). */
    version: () => view.state.doc,
    /** Go back to the contents at `version`, as one undoable change. */
    restore: (version) => replaceAll(version),
    /** Whether the contents differ from what they were at `version` (cheap on shared structure). */
    changedSince: (version) => !view.state.doc.eq(version),
    onSave: (callback) => { saveHandlers.push(callback); },
    onChange: (callback) => { changeHandlers.push(callback); },
    language: row ? row.name : null,
    view,
  };
}

window.OpentermdEditor = { create, languageFor: (filename) => (languageFor(filename) || {}).name || null };
