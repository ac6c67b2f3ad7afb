// Building the page without markup: every string a host, an agent or a user supplied becomes a
// text node, so a hostname holding <img onerror=…> is shown, never parsed. Nothing here parses
// markup, and attributes that could run script (on*, href with a scheme) are refused.

const SVG = "http://www.w3.org/2000/svg";

function build(element, attributes, children) {
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) {
      if (typeof value !== "function") throw new Error(`handler ${name} must be a function`);
      element.addEventListener(name.slice(2), value);
    } else if (name === "href" && !/^(#|\/|\?)/.test(String(value))) {
      throw new Error(`refusing href ${value}: only same-origin paths and fragments`);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element: h("td", {class: "x"}, "text", otherNode). */
export function h(tag, attributes, ...children) {
  return build(document.createElement(tag), attributes, children);
}

/** An SVG element, as h. */
export function s(tag, attributes, ...children) {
  return build(document.createElementNS(SVG, tag), attributes, children);
}

export function replace(target, ...children) {
  target.replaceChildren();
  build(target, {}, children);
  return target;
}

/** A table with a header row: each cell is text or a node. */
export function table(id, columns, rows) {
  return h("table", { id }, h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))));
}
