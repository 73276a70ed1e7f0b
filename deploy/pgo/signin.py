#!/usr/bin/env python3
"""Signs in through Portcullis's browser flow without a browser.

Usage: signin.py START_URL USER PASSWORD COOKIE_NAME

Follows the redirect to the OpenID Provider, fills in its login form (the
development IdP's, `crates/devidp`: fields `username`, `password` and a
hidden `transaction`), posts it, follows the callback back to Portcullis
with a cookie jar, and prints `COOKIE_NAME=value` of Portcullis's session
cookie. Used by the proxy benchmark and the PGO training run; not a general
OIDC client (no consent pages, no other providers' forms).
"""
import html.parser, http.cookiejar, sys, urllib.parse, urllib.request

start, user, password, name = sys.argv[1:]


class Form(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.action, self.fields = None, {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.action = a.get("action")
        elif tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""


jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
accept = {"Accept": "text/html"}
page = opener.open(urllib.request.Request(start, headers=accept), timeout=10)
form = Form()
form.feed(page.read().decode())
if form.action is None or "transaction" not in form.fields:
    sys.exit(f"no login form at {page.geturl()}")
form.fields.update(username=user, password=password)
action = urllib.parse.urljoin(page.geturl(), form.action)
data = urllib.parse.urlencode(form.fields).encode()
try:
    landed = opener.open(urllib.request.Request(action, data=data, headers=accept), timeout=10)
    status = landed.status
except urllib.error.HTTPError as e:
    status = e.code  # a signed-in user the policy refuses lands on a 403
cookies = [c for c in jar if c.name == name]
if not cookies:
    sys.exit(f"signed in (last status {status}) but got no {name} cookie")
print(f"{name}={cookies[0].value}")
