// berth console: the few lines of script the pages use. Loaded from
// /console/assets/ (the Content-Security-Policy allows no inline script).
// Every change is a call to berth's API with the session cookie and the
// page's CSRF token; on success the page reloads and shows the new state.
(function () {
  "use strict";

  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }

  function call(method, path, body) {
    var headers = { "X-CSRF-Token": csrf(), Accept: "application/json" };
    var init = { method: method, credentials: "same-origin", headers: headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    var base = document.querySelector('meta[name="berth-base"]');
    return fetch((base ? base.getAttribute("content") : "") + path, init).then(function (res) {
      return res.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!res.ok) {
          var msg = data && data.errors && data.errors[0] && data.errors[0].message;
          throw new Error(msg || res.status + " " + res.statusText);
        }
        return data;
      });
    });
  }

  // `a.b.0.c` paths into nested objects and arrays.
  function set(obj, path, value) {
    var keys = path.split(".");
    var o = obj;
    for (var i = 0; i < keys.length - 1; i++) {
      var k = keys[i];
      if (o[k] === undefined) o[k] = /^\d+$/.test(keys[i + 1]) ? [] : {};
      o = o[k];
    }
    o[keys[keys.length - 1]] = value;
  }

  // Arrays with holes (unchecked boxes) closed up.
  function compact(v) {
    if (Array.isArray(v)) {
      return v.filter(function (x) { return x !== undefined; }).map(compact);
    }
    if (v && typeof v === "object") {
      Object.keys(v).forEach(function (k) { v[k] = compact(v[k]); });
    }
    return v;
  }

  function formBody(form) {
    var body = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled) return;
      var type = el.getAttribute("data-type") || "";
      var v;
      if (el.type === "checkbox") {
        if (type === "bool-string") v = el.checked ? "true" : "false";
        else if (type === "item") { if (!el.checked) return; v = el.value; }
        else if (type === "access") {
          if (!el.checked) return;
          v = { resource: "repository", action: el.value };
        }
        else v = el.checked;
      } else if (type === "bool") {
        v = el.value === "true";
      } else if (type === "number") {
        if (el.value === "") return;
        v = Number(el.value);
      } else if (type === "gib") {
        if (el.value === "") return;
        var n = Number(el.value);
        v = n < 0 ? -1 : Math.round(n * 1073741824);
      } else {
        v = el.value;
      }
      set(body, el.name, v);
    });
    return compact(body);
  }

  function showSecret(box, secret) {
    box.querySelector("code").textContent = secret;
    box.hidden = false;
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var method = form.getAttribute("data-api-method");
    if (!method) return;
    ev.preventDefault();
    var result = form.querySelector(".result");
    if (result) { result.textContent = "Working…"; result.className = "result"; }
    call(method, form.getAttribute("data-api-path"), formBody(form)).then(function (data) {
      var box = form.querySelector(".secret");
      if (box && data && data.secret) {
        showSecret(box, data.secret);
        if (result) result.textContent = "Created " + (data.name || "") + ".";
        return;
      }
      location.reload();
    }, function (err) {
      if (result) { result.textContent = err.message; result.className = "result error"; }
    });
  });

  document.addEventListener("click", function (ev) {
    var el = ev.target.closest ? ev.target.closest("button") : null;
    if (!el) return;
    if (el.hasAttribute("data-copy") || el.hasAttribute("data-copy-from")) {
      var text = el.getAttribute("data-copy");
      if (text === null) {
        var from = el.parentNode.querySelector(el.getAttribute("data-copy-from"));
        text = from ? from.textContent : "";
      }
      var show = function (ok) {
        el.textContent = ok ? "Copied" : "Copy failed: select the text";
        if (ok) el.setAttribute("data-copied", "1");
        setTimeout(function () { el.textContent = "Copy"; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(
          function () { show(true); },
          function () { show(false); });
      } else {
        var ta = document.createElement("textarea");
        ta.value = text;
        document.body.appendChild(ta);
        ta.select();
        var ok = false;
        try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
        document.body.removeChild(ta);
        show(ok);
      }
      return;
    }
    var method = el.getAttribute("data-api-method");
    if (!method || el.form && el.type === "submit") return;
    var confirmText = el.getAttribute("data-confirm");
    if (confirmText && !window.confirm(confirmText)) return;
    var raw = el.getAttribute("data-api-body");
    var body = raw ? JSON.parse(raw) : undefined;
    el.disabled = true;
    call(method, el.getAttribute("data-api-path"), body).then(function (data) {
      if (el.hasAttribute("data-show-secret") && data && data.secret) {
        var box = document.createElement("span");
        box.className = "copy";
        var code = document.createElement("code");
        code.textContent = data.secret;
        var b = document.createElement("button");
        b.type = "button";
        b.textContent = "Copy";
        b.setAttribute("data-copy", data.secret);
        box.appendChild(code);
        box.appendChild(b);
        el.parentNode.appendChild(box);
        el.disabled = false;
        return;
      }
      location.reload();
    }, function (err) {
      el.disabled = false;
      var msg = document.createElement("p");
      msg.className = "result error";
      msg.setAttribute("role", "alert");
      msg.textContent = err.message;
      el.parentNode.appendChild(msg);
    });
  });
})();
