// xterm.js's run-time styles under the page's CSP (style-src 'self': no <style> elements, no style
// attributes), per terminal, with nothing on the page changed for longer than one call.
//
// xterm 6 makes three <style> elements (the scrollbar's colours, the DOM renderer's theme and cell
// size), all while `term.open()` runs, and later sets `style` attributes on the cells it draws in
// 24-bit colour (setAttribute). Both are refused by that policy. The CSSOM is not subject to it, so:
//  - while open() runs (synchronously: no other script can run meanwhile), the document answers
//    createElement("style") with an inert <template> whose text goes to a constructable stylesheet
//    the page adopts (and drops when xterm removes the element); the document is as before once
//    open() returns. (xterm's `documentOverride` option cannot do it: xterm 6 ignores it for the
//    scrollbar's style and for the cells.)
//  - the cells come from this terminal's row factory, whose document is pointed at a stand-in whose
//    elements set a `style` attribute through `style.cssText`, which means the same.
// No 'unsafe-inline' is needed, and Element.prototype and the other elements are untouched.
//
// Needs nothing; sets window.opentermd.openUnderCsp(term, parent).
"use strict";

(() => {
  const supported = "adoptedStyleSheets" in document && typeof CSSStyleSheet.prototype.replaceSync === "function";

  /** A <template> standing in for a <style>: its text is an adopted stylesheet while it is in use. */
  function styleStandIn(createElement) {
    const standIn = createElement("template");
    standIn.dataset.adoptedStyle = "";
    const sheet = new CSSStyleSheet();
    let text = "";
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    Object.defineProperty(standIn, "textContent", {
      configurable: true,
      get: () => text,
      set: (value) => {
        text = value == null ? "" : String(value);
        sheet.replaceSync(text);
      },
    });
    standIn.remove = function () {
      document.adoptedStyleSheets = document.adoptedStyleSheets.filter((item) => item !== sheet);
      Element.prototype.remove.call(this);
    };
    return standIn;
  }

  /** An element's setAttribute with `style` routed through the CSSOM; given to the cells only. */
  function setAttributeViaCssom(name, value) {
    if (String(name).toLowerCase() === "style") {
      this.style.cssText = String(value);
      return;
    }
    Element.prototype.setAttribute.call(this, name, value);
  }

  /** What the row factory uses as its document: it only creates the cells' spans. */
  const cellDocument = {
    createElement(tagName, options) {
      const element = document.createElement(tagName, options);
      element.setAttribute = setAttributeViaCssom;
      return element;
    },
  };

  /** Open `term` in `parent`, its styles through the CSSOM. */
  function openUnderCsp(term, parent) {
    if (!supported) {
      term.open(parent);  // Its styles are refused; the terminal still works, plainer.
      return;
    }
    const realCreate = Document.prototype.createElement.bind(document);
    document.createElement = (tagName, options) =>
      String(tagName).toLowerCase() === "style" ? styleStandIn(realCreate) : realCreate(tagName, options);
    try {
      term.open(parent);
    } finally {
      delete document.createElement;  // The prototype's again.
    }
    // xterm 6's DOM renderer gives its row factory the page's `document` (a private field): this
    // terminal's factory gets the stand-in. The browser test of 24-bit colour fails if an upgrade moves it.
    const factory = term._core?._renderService?._renderer?.value?._rowFactory;
    if (factory && "_document" in factory) factory._document = cellDocument;
  }

  window.opentermd = Object.assign(window.opentermd || {}, { openUnderCsp });
})();
