// Runs one query against the page for the browser steps. The Go side
// calls it as (function)(request) with the request as a JSON literal, so no
// value from a workflow is ever spliced into code. It returns a plain
// object: {invalid} when the selector does not parse, otherwise what the
// operation found.
(function (q) {
  function findAll(root, sel) {
    if (q.by === "xpath") {
      const r = document.evaluate(sel, root, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null);
      const out = [];
      for (let i = 0; i < r.snapshotLength; i++) out.push(r.snapshotItem(i));
      return out;
    }
    return Array.from(root.querySelectorAll(sel));
  }

  // visible follows what a person sees: laid out with a size, and not
  // hidden by its style.
  function visible(node) {
    if (!node || node.nodeType !== 1 || !node.isConnected) return false;
    const style = getComputedStyle(node);
    if (style.visibility === "hidden" || style.display === "none") return false;
    const box = node.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  }

  function text(node) {
    if (node.nodeType === 2) return node.value;
    if (node.nodeType !== 1) return (node.textContent || "").trim();
    const t = typeof node.innerText === "string" ? node.innerText : node.textContent;
    return (t || "").trim();
  }

  // read gives a node's text, or an attribute of it; "value" is the live
  // value of a form field, which the attribute does not follow.
  function read(node, attr) {
    if (!attr || node.nodeType !== 1) return text(node);
    if (attr === "value" && "value" in node) return String(node.value);
    return node.getAttribute(attr);
  }

  // field reads one sub-selector of a repeated element: "span.price",
  // "a@href", "@data-id" (the element's own attribute) or "" (its text).
  function field(el, spec) {
    let sel = spec, attr = "";
    const at = spec.lastIndexOf("@");
    if (at >= 0 && /^[A-Za-z_:][-\w:.]*$/.test(spec.slice(at + 1)) && !/[\/\[(,=\s]$/.test(spec.slice(0, at))) {
      sel = spec.slice(0, at).trim();
      attr = spec.slice(at + 1);
    }
    let node = el;
    if (sel !== "") {
      node = findAll(el, sel)[0];
      if (!node) return null;
    }
    return read(node, attr);
  }

  function columnNames(row) {
    const seen = {};
    return Array.from(row.cells).map((cell, i) => {
      let name = text(cell) || "column" + (i + 1);
      if (seen[name]) name = name + "_" + (++seen[name]);
      else seen[name] = 1;
      return name;
    });
  }

  function scrapeTable(els) {
    let rows;
    if (els[0].tagName === "TABLE") rows = Array.from(els[0].rows);
    else if (els.every((el) => el.tagName === "TR")) rows = els;
    else return { notTable: els[0].nodeType === 1 ? els[0].tagName.toLowerCase() : els[0].nodeName };
    rows = rows.filter((row) => row.cells.length > 0);
    if (q.header === false) return { rows: rows.map((row) => Array.from(row.cells).map(text)) };
    if (rows.length === 0) return { rows: [] };
    // The header is the first row made only of th cells, or else the
    // first row.
    let h = rows.findIndex((row) => Array.from(row.cells).every((c) => c.tagName === "TH"));
    if (h < 0) h = 0;
    const names = columnNames(rows[h]);
    return {
      rows: rows.slice(h + 1).map((row) => {
        const obj = {};
        Array.from(row.cells).forEach((cell, i) => {
          obj[i < names.length ? names[i] : "column" + (i + 1)] = text(cell);
        });
        return obj;
      }),
    };
  }

  let els;
  try {
    els = findAll(document, q.sel);
    if (q.fields) for (const spec of Object.values(q.fields)) field(document.documentElement, spec);
  } catch (e) {
    return { invalid: String((e && e.message) || e) };
  }

  switch (q.op) {
    case "probe":
      return { count: els.length, visible: visible(els[0]) };

    case "clear": {
      const el = els[0];
      if (!el) return { count: 0 };
      el.focus();
      if (el.isContentEditable) {
        el.textContent = "";
      } else if ("value" in el) {
        // The prototype's setter, so that frameworks that wrap the value
        // property (React) notice the change.
        const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), "value");
        if (setter && setter.set) setter.set.call(el, "");
        else el.value = "";
      }
      el.dispatchEvent(new Event("input", { bubbles: true }));
      return { count: 1 };
    }

    case "select": {
      const el = els[0];
      if (!el) return { count: 0 };
      if (el.tagName !== "SELECT") return { count: 1, notSelect: el.nodeType === 1 ? el.tagName.toLowerCase() : el.nodeName };
      const options = Array.from(el.options);
      const o = options.find((o) => (q.value != null ? o.value === q.value : o.text.trim() === q.label));
      if (!o) return { count: 1, options: options.map((o) => o.text.trim() + " (" + o.value + ")") };
      el.value = o.value;
      o.selected = true;
      el.dispatchEvent(new Event("input", { bubbles: true }));
      el.dispatchEvent(new Event("change", { bubbles: true }));
      return { count: 1, value: o.value, label: o.text.trim() };
    }

    case "extract":
      return { count: els.length, values: (q.all ? els : els.slice(0, 1)).map((el) => read(el, q.attr)) };

    case "scrape":
      if (els.length === 0) return { count: 0, rows: [] };
      if (q.fields) {
        const rows = els.map((el) => {
          const obj = {};
          for (const [name, spec] of Object.entries(q.fields)) obj[name] = field(el, spec);
          return obj;
        });
        return { count: rows.length, rows: rows };
      }
      const table = scrapeTable(els);
      if (table.rows) table.count = table.rows.length;
      return table;
  }
  return { invalid: "unknown operation " + q.op };
})
