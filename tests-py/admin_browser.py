"""Drives mtproxyd's built-in admin page in a real headless Chromium (Debian's, through
Playwright) and reports what the page showed, one step per run:

  create USER   fill the form, submit, wait for the row, copy its first link
  disable USER  click "disable", wait for the row to say so
  enable USER   click "enable", wait for the row to lose the mark
  delete USER   click "delete", accept the confirmation, wait for the row to go
  edit USER --field F --value V
                click "edit", set the limit field F to V (empty = clear), save; wait for
                the form to close (saved) or for its error line (with --expect-error)

Prints one line ``ADMIN {json}`` and exits 0 when the step worked. Loopback only.
"""
import argparse
import json
import sys

from playwright.sync_api import sync_playwright


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True, help="http://127.0.0.1:PORT (the API listener)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("step", choices=["create", "disable", "enable", "delete", "edit"])
    p.add_argument("user")
    p.add_argument("--field", help="edit: the limit input's name")
    p.add_argument("--value", default="", help="edit: the new value (empty clears)")
    p.add_argument("--expect-error", action="store_true", help="edit: the API must refuse it")
    a = p.parse_args()
    out = {"ok": False, "step": a.step, "user": a.user}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium, args=["--no-sandbox"])
        ctx = browser.new_context(viewport={"width": 390, "height": 844})  # a phone screen
        ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=a.url)
        page = ctx.new_page()
        page.on("dialog", lambda d: d.accept())
        page.goto(a.url + "/admin")
        row = page.locator(f'tr[data-user="{a.user}"]')
        if a.step == "create":
            page.fill('input[name="username"]', a.user)
            page.fill('input[name="max_tcp_conns"]', "5")
            page.click('#create button[type="submit"]')
            row.wait_for(timeout=10000)
            row.locator('button[data-action="copy"]').click()
            page.wait_for_function("() => document.querySelector('#status').textContent.length > 0")
            out["status"] = page.locator("#status").text_content()
            try:
                out["copied"] = page.evaluate("navigator.clipboard.readText()")
            except Exception as e:  # headless clipboard may be unavailable: the text is on the page
                out["copied"] = None
                out["clipboard_error"] = str(e)
            out["link"] = row.locator(".link").first.text_content()
            row.locator('button[data-action="qr"]').click()
            row.locator(".qr svg").wait_for(timeout=10000)
            out["qr"] = True
            out["ok"] = out["link"].startswith("tg://proxy?")
        elif a.step in ("disable", "enable"):
            row.wait_for(timeout=10000)
            row.locator(f'button[data-action="{a.step}"]').click()
            want = "(disabled)" if a.step == "disable" else None
            page.wait_for_function(
                """([u, want]) => {
                    const r = document.querySelector(`tr[data-user="${u}"]`);
                    if (!r) return false;
                    const t = r.cells[0].textContent;
                    return want ? t.includes(want) : !t.includes("(disabled)");
                }""",
                arg=[a.user, want],
                timeout=10000,
            )
            out["ok"] = True
        elif a.step == "edit":
            row.wait_for(timeout=10000)
            row.locator('button[data-action="edit"]').click()
            form = page.locator(f'form.limits[data-user="{a.user}"]')
            form.wait_for(timeout=10000)
            # A phone screen: the form must fit without sideways scrolling.
            box = form.bounding_box()
            out["form_fits"] = box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
            inp = form.locator(f'input[name="{a.field}"]')
            out["before"] = inp.input_value()
            inp.fill(a.value)
            form.locator('button[data-action="save"]').click()
            if a.expect_error:
                err = form.locator(".error")
                page.wait_for_function(
                    "(u) => { const e = document.querySelector(`form.limits[data-user=\"${u}\"] .error`);"
                    " return e && e.textContent.length > 0; }",
                    arg=a.user,
                    timeout=10000,
                )
                out["error"] = err.text_content()
                out["invalid"] = inp.get_attribute("aria-invalid") == "true"
                out["status"] = page.locator("#status").text_content()
                # The periodic refresh must not wipe the form and its message meanwhile.
                page.wait_for_timeout(3500)
                out["still_open"] = form.is_visible() and err.text_content() == out["error"]
                out["ok"] = out["still_open"] and out["form_fits"]
            else:
                form.wait_for(state="detached", timeout=10000)
                out["status"] = page.locator("#status").text_content()
                out["summary"] = row.locator(".limits-summary").all_text_contents()
                out["ok"] = "saved" in out["status"] and out["form_fits"]
        else:
            row.wait_for(timeout=10000)
            row.locator('button[data-action="delete"]').click()
            row.wait_for(state="detached", timeout=10000)
            out["ok"] = True
        browser.close()
    print("ADMIN " + json.dumps(out))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
