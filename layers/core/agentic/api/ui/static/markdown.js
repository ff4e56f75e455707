"use strict";
// A small Markdown renderer for the writer's report, safe by construction: it builds DOM nodes and
// puts every piece of text in with textContent, so nothing in a report (which quotes the task's
// description) can become markup. Supported: # headings, paragraphs (a newline is a line break),
// - / * / 1. lists (nested by indentation, indented continuation lines), ``` code fences, `code`,
// **bold**, *emphasis*, and [links](https://...) to http(s) only.
(function (global) {
  const INLINE = /(`+)([^`]+?)\1|\*\*([^*]+?)\*\*|(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g;
  const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
  const FENCE = /^\s*```/;

  function text(parent, value) {
    parent.appendChild(document.createTextNode(value));
  }

  function inline(parent, source) {
    const re = new RegExp(INLINE.source, "g"); // its own: inline() recurses into bold and emphasis
    let last = 0;
    for (let m = re.exec(source); m !== null; m = re.exec(source)) {
      if (m.index > last) text(parent, source.slice(last, m.index));
      if (m[2] !== undefined) {
        const code = document.createElement("code");
        code.textContent = m[2];
        parent.appendChild(code);
      } else if (m[3] !== undefined) {
        const strong = document.createElement("strong");
        inline(strong, m[3]);
        parent.appendChild(strong);
      } else if (m[4] !== undefined) {
        const em = document.createElement("em");
        inline(em, m[4]);
        parent.appendChild(em);
      } else {
        const a = document.createElement("a");
        a.href = m[6];
        a.rel = "noopener noreferrer nofollow";
        a.target = "_blank";
        a.textContent = m[5];
        parent.appendChild(a);
      }
      last = re.lastIndex;
    }
    if (last < source.length) text(parent, source.slice(last));
  }

  function indentOf(line) {
    return line.length - line.trimStart().length;
  }

  function render(markdown) {
    const root = document.createDocumentFragment();
    const lines = String(markdown || "").replace(/\r\n?/g, "\n").split("\n");
    let paragraph = null;
    let lists = []; // open lists, outermost first: {indent, el, li}

    const closeBlocks = () => {
      paragraph = null;
      lists = [];
    };

    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if (!line.trim()) {
        closeBlocks();
        continue;
      }
      if (FENCE.test(line)) {
        closeBlocks();
        const body = [];
        for (i++; i < lines.length && !FENCE.test(lines[i]); i++) body.push(lines[i]);
        const pre = document.createElement("pre");
        const code = document.createElement("code");
        code.textContent = body.join("\n");
        pre.appendChild(code);
        root.appendChild(pre);
        continue;
      }
      const heading = HEADING.exec(line);
      if (heading && indentOf(line) === 0) {
        closeBlocks();
        const h = document.createElement(`h${heading[1].length}`);
        inline(h, heading[2]);
        root.appendChild(h);
        continue;
      }
      const item = LIST_ITEM.exec(line);
      if (item) {
        paragraph = null;
        const indent = item[1].length;
        const ordered = /\d/.test(item[2]);
        const tag = ordered ? "OL" : "UL";
        while (lists.length && indent < lists[lists.length - 1].indent) lists.pop();
        let top = lists[lists.length - 1];
        if (top && indent > top.indent && top.li) {
          top = null; // a nested list inside the last item
        } else if (top && top.el.tagName !== tag) {
          lists.pop();
          top = null; // another kind of list at the same level
        }
        if (!top) {
          const parentList = lists[lists.length - 1];
          const el = document.createElement(tag.toLowerCase());
          if (ordered && parseInt(item[2], 10) !== 1) el.start = parseInt(item[2], 10);
          (parentList && parentList.li ? parentList.li : root).appendChild(el);
          top = { indent, el, li: null };
          lists.push(top);
        }
        const li = document.createElement("li");
        inline(li, item[3]);
        top.el.appendChild(li);
        top.li = li;
        continue;
      }
      const openItem = lists.length ? lists[lists.length - 1].li : null;
      if (openItem && indentOf(line) > 0) {
        // An indented line right under a list item continues it.
        openItem.appendChild(document.createElement("br"));
        inline(openItem, line.trim());
        continue;
      }
      lists = [];
      if (paragraph) {
        paragraph.appendChild(document.createElement("br"));
      } else {
        paragraph = document.createElement("p");
        root.appendChild(paragraph);
      }
      inline(paragraph, line.trim());
    }
    return root;
  }

  global.renderMarkdown = render;
})(window);
