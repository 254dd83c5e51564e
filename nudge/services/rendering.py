"""Per-recipient rendering of email templates: merge tags in a sandboxed Jinja environment.

    compiled = compile_template(content_json=doc, base_url=...)   # or mjml=... / html=...
    compiled.html, compiled.text, compiled.warnings                # merge tags still in place
    html, text = render_version(version, build_context(account, contact, unsubscribe_url=..., ...))

A template is compiled once per version (blocks -> MJML -> HTML, or raw HTML with its CSS inlined; the
plain-text part derived from the HTML; Jinja syntax and sandbox rules checked with the line of the
source the user wrote) and the Jinja templates of a version are cached, so a send only runs the
per-recipient render. Missing values render empty, so a contact without a custom field never breaks a
send; internals (`{{ ''.__class__ }}`) are refused at save time and fail closed at render time.

Nothing a template does can exhaust the server (docs/security.md): the source is capped at
MAX_SOURCE_BYTES and its merge-tag code at MAX_MERGE_TAG_CHARS, merge tags are found in linear time, and
every render is bounded in loop iterations, string and number sizes, output and time (BoundedCodeGenerator
writes the guards into the compiled templates); a trial (compile + preview, a test send) shares one
RENDER_SECONDS of render time and stops with a ValidationError saying which limit was reached.
"""
import contextvars
import datetime as dt
import difflib
import functools
import html as html_lib
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from html.parser import HTMLParser

import css_inline
from flask import current_app, has_app_context
from jinja2 import Template, meta, nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.filters import FILTERS as JINJA_FILTERS
from jinja2.runtime import ChainableUndefined, LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from nudge.errors import ValidationError
from nudge.services import email_doc

GMAIL_CLIP_BYTES = 102 * 1024
CACHE_SIZE = 64
MAX_REPEAT = 10_000          # longest string or list that `*` may build in a template
MAX_POWER = 1_000            # largest exponent `**` accepts
MAX_REPLACE_RESULT = 1_000_000
MAX_LOOP_DEPTH = 2
# Limits of one render (docs/security.md): a template that crosses one is refused when it is saved or
# previewed (its trial render with the sample contact), and a recipient's render that crosses one fails
# alone. The source itself is capped at email_doc.MAX_SOURCE_BYTES on every compile path.
MAX_SOURCE_BYTES = email_doc.MAX_SOURCE_BYTES
MAX_LOOP_ITERATIONS = 10_000     # iterations of all {% for %} loops of one render together
MAX_STRING = 1_000_000           # longest string or list (in characters) that ~, +, join or * may build
MAX_OUTPUT = 5_000_000           # characters one render may produce (set blocks included)
MAX_INT_BITS = 10_000            # largest integer * and ** may build
# Characters inside merge tags ({{ }}, {% %}, {# #}) of one source: Jinja's parser and compiler cost grows
# with the code in the tags (text between them is cheap), so this bounds the compile of a 512 KB source.
MAX_MERGE_TAG_CHARS = 64 * 1024
RENDER_SECONDS = 1.0             # render time of one render, or of all the trial renders of a compile + preview
# Stand-ins for merge tags while HTML/MJML tools run: plain ASCII words that no tool escapes or moves
# (MRML writes non-ASCII characters in attributes as Rust escapes).
TOKEN = re.compile(r"NuDgEmT(\d+)x")
COMMENT_TOKEN = re.compile(r"<!--NuDgEmT(\d+)x-->")
# Tags, comments and raw-text elements, where a stand-in must stay plain text.
RAW_TEXT_ELEMENT = re.compile(r"(style|script|title|textarea)\b", re.I)
RAW_TEXT_END = {name: re.compile(rf"</{name}\s*>", re.I) for name in ("style", "script", "title", "textarea")}
ANGLE = re.compile(r"[<>]")
BLANK_LINES = re.compile(r"\n{3,}")
UNSUBSCRIBE_TAG = re.compile(r"\{\{-?\s*unsubscribe_url\b")
POSTAL_REFERENCE = re.compile(r"\baccount\.postal_address\b|\baccount\[\s*['\"]postal_address['\"]\s*\]")

PREVIEW_PATHS = {"unsubscribe_url": "/u/preview", "preferences_url": "/p/preview", "view_in_browser_url": "/v/preview"}
SAMPLE_CONTACT = {"email": "alex.sample@example.com", "first_name": "Alex", "last_name": "Sample", "tags": ["sample"]}
SAMPLE_ACCOUNT = {"name": "Your company", "postal_address": "1 Sample Street, Sample City",
                  "default_from_name": "Your company", "default_from_email": "news@example.com"}
CONTACT_BUILTINS = ("email", "first_name", "last_name", "tags", "subscription_date")
# Names a custom field may not take over at contact.<name> (contact.custom.<name> always works).
SHADOW_PROOF = frozenset(CONTACT_BUILTINS) | {"custom", "id", "status", "custom_fields", "created_at", "updated_at",
                                              "source", "account_id", "deleted_at"}


# --------------------------------------------------------------------------------------------------
# The sandbox

class BlankUndefined(ChainableUndefined):
    """A missing value: renders empty and survives filters, calls, arithmetic and comparisons, so one
    contact's missing custom field never breaks a send. An unsafe access still fails loudly."""
    __slots__ = ()

    def _unsafe(self):
        return self._undefined_exception is SecurityError

    def _blank(self, *args, **kwargs):
        if self._unsafe():
            self._fail_with_undefined_error()
        return self

    def _false(self, other):
        if self._unsafe():
            self._fail_with_undefined_error()
        return False

    __call__ = __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _blank
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _blank
    __pow__ = __rpow__ = __pos__ = __neg__ = _blank
    __lt__ = __le__ = __gt__ = __ge__ = _false

    def __str__(self):
        if self._unsafe():
            self._fail_with_undefined_error()
        return ""

    def __iter__(self):
        if self._unsafe():
            self._fail_with_undefined_error()
        yield from ()

    def __html__(self):
        return str(self)


def _missing(value):
    return value is None or isinstance(value, Undefined) or (isinstance(value, str) and not value.strip())


def filter_default(value, default_value="", boolean=False):
    """Like Jinja's default, but a blank or null field counts as missing (a contact imported without a
    first name still gets "there")."""
    if _missing(value) or (boolean and not value):
        return default_value
    return value


def _as_date(value):
    if isinstance(value, (dt.date, dt.datetime)):
        return value
    text = str(value).strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def filter_date(value, format=None):
    """An ISO date or datetime (custom date fields are stored as 2024-05-31) in a readable form:
    `{{ contact.renewal | date }}` -> 31 May 2024, `| date("%d/%m/%Y")` -> 31/05/2024."""
    if _missing(value):
        return ""
    when = _as_date(value)
    if when is None:
        return value
    if format is None:
        return f"{when.day} {when.strftime('%B %Y')}"
    return when.strftime(str(format)[:100])


def filter_replace(eval_ctx, s, old, new, count=None):
    """Jinja's replace, refusing results that would blow up a render (and an empty `old`)."""
    text, old_text, new_text = str(s), str(old), str(new)
    if not old_text:
        return s
    if len(text) + text.count(old_text) * max(0, len(new_text) - len(old_text)) > MAX_REPLACE_RESULT:
        raise SecurityError("replace would build a string that is too long.")
    return JINJA_FILTERS["replace"](eval_ctx, s, old, new, count)


filter_replace.jinja_pass_arg = JINJA_FILTERS["replace"].jinja_pass_arg

ALLOWED_FILTERS = ("upper", "lower", "title", "capitalize", "trim", "truncate", "join", "length", "count", "first",
                   "last", "round", "int", "float", "abs", "urlencode", "escape", "e", "striptags", "wordcount",
                   "list", "sort", "unique", "reverse", "min", "max", "string")
FILTERS = {name: JINJA_FILTERS[name] for name in ALLOWED_FILTERS}
FILTERS.update({"default": filter_default, "d": filter_default, "date": filter_date, "replace": filter_replace})

# The only methods a template may call: harmless ones on the plain data of the context.
SAFE_METHODS = {
    str: frozenset({"upper", "lower", "title", "capitalize", "strip", "lstrip", "rstrip", "startswith", "endswith",
                    "split", "count", "find"}),
    Markup: frozenset({"upper", "lower", "title", "capitalize", "strip", "lstrip", "rstrip", "startswith",
                       "endswith", "split", "count", "find"}),
    dict: frozenset({"get", "keys", "values", "items"}),
    LoopContext: frozenset({"cycle", "changed"}),
}


# --------------------------------------------------------------------------------------------------
# Render limits: loop iterations, string sizes, output size and time, per render

TOO_SLOW = f"The template takes too long to render (over {RENDER_SECONDS:g} s): simplify its loops and filters."


class _Budget:
    """What one render has used so far; every guard below charges it and checks the deadline."""
    __slots__ = ("deadline", "iterations", "output")

    def __init__(self, deadline):
        self.deadline, self.iterations, self.output = deadline, 0, 0


class _Trial:
    """Render time left to the renders of one trial (compile + preview render up to four times)."""
    __slots__ = ("remaining",)

    def __init__(self, seconds):
        self.remaining = seconds


_budget = contextvars.ContextVar("nudge_render_budget", default=None)
_trial = contextvars.ContextVar("nudge_render_trial", default=None)


class time_limit:  # noqa: N801 - used as a function: `with time_limit():`
    """The renders inside share `seconds` of render time (parsing and compiling, which only depend on
    the capped source size, are not counted). Nested, the outer limit holds. A class rather than a
    contextlib generator: every recipient's render of a send goes through one."""
    __slots__ = ("seconds", "token")

    def __init__(self, seconds=None):
        self.seconds, self.token = seconds, None

    def __enter__(self):
        if _trial.get() is None:
            self.token = _trial.set(_Trial(RENDER_SECONDS if self.seconds is None else self.seconds))
        return self

    def __exit__(self, *exc_info):
        if self.token is not None:
            _trial.reset(self.token)
        return False


def _current_budget():
    budget = _budget.get()
    if budget is None:  # a render that did not go through BoundedTemplate.render (none of ours)
        budget = _Budget(time.monotonic() + RENDER_SECONDS)
    return budget


def _tick():
    budget = _budget.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise SecurityError(TOO_SLOW)


def _size(value, limit=MAX_STRING):
    """Characters a value stands for once made text (a list counts its items), counted only up to a
    little past limit so that measuring stays cheap."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple, dict)):
        total = 2
        for item in (value.items() if isinstance(value, dict) else value):
            total += _size(item, limit) + 2
            if total > limit:
                break
        return total
    return 8


def _too_big(*values):
    return sum(_size(value) for value in values) > MAX_STRING


class BoundedTemplate(Template):
    """A template whose every render runs with its own budget (and within a trial's deadline)."""

    def render(self, *args, **kwargs):
        trial = _trial.get()
        start = time.monotonic()
        seconds = RENDER_SECONDS if trial is None else min(RENDER_SECONDS, trial.remaining)
        token = _budget.set(_Budget(start + seconds))
        try:
            return super().render(*args, **kwargs)
        finally:
            _budget.reset(token)
            if trial is not None:
                trial.remaining -= time.monotonic() - start


class BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with the render guards written into the compiled template: every loop
    iterates through environment.guard_loop, every output goes through environment.count_output
    (set blocks too), and every ~ through environment.checked_concat."""

    def visit_Template(self, node, frame=None):
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.EnvironmentAttribute("guard_loop"), [loop.iter], [], None, None,
                                   lineno=loop.iter.lineno)
        super().visit_Template(node, frame)

    def _output_child_pre(self, node, frame, finalize):
        super()._output_child_pre(node, frame, finalize)
        self.write("environment.count_output(")

    def _output_child_post(self, node, frame, finalize):
        self.write(")")
        super()._output_child_post(node, frame, finalize)

    def _output_const_repr(self, group):
        return f"environment.count_output({super()._output_const_repr(group)})"

    def visit_Concat(self, node, frame):
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.checked_concat({join}, (")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


def _guarded_filter(function):
    """A filter that first checks the render's deadline and the size of what it is given."""
    @functools.wraps(function)
    def guarded(*args, **kwargs):
        _tick()
        if _too_big(*args, *kwargs.values()):
            raise SecurityError(f"A value over {MAX_STRING:,} characters cannot go through a filter.")
        return function(*args, **kwargs)
    return guarded


def filter_join(eval_ctx, value, d="", attribute=None):
    """Jinja's join, refusing results over MAX_STRING characters (a long separator between many items)."""
    items = value if isinstance(value, (str, list, tuple)) else list(value)
    if _size(items) + len(str(d)) * max(0, len(items) - 1) > MAX_STRING:
        raise SecurityError(f"join would build a string over {MAX_STRING:,} characters.")
    return JINJA_FILTERS["join"](eval_ctx, items, d, attribute)


filter_join.jinja_pass_arg = JINJA_FILTERS["join"].jinja_pass_arg
FILTERS["join"] = filter_join


def _repeat_too_long(sequence, times):
    return (isinstance(sequence, (str, list, tuple)) and isinstance(times, int)
            and (len(sequence) * times > MAX_REPEAT or _size(sequence) * times > MAX_STRING))


def _int_too_big(operator, left, right):
    if not (isinstance(left, int) and isinstance(right, int)):
        return False
    if operator == "*":
        return left.bit_length() + right.bit_length() > MAX_INT_BITS
    return left.bit_length() * abs(right) > MAX_INT_BITS  # **


class EmailSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, narrowed further: no globals, an allow-list of filters and methods, and
    operators, loops and output that cannot be used to exhaust memory or CPU (the limits above)."""
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = BoundedCodeGenerator
    template_class = BoundedTemplate

    def __init__(self, autoescape):
        super().__init__(autoescape=autoescape, undefined=BlankUndefined, finalize=_finalize,
                         keep_trailing_newline=True, cache_size=0, auto_reload=False)
        self.globals.clear()
        self.filters = {name: _guarded_filter(function) for name, function in FILTERS.items()}

    def getattr(self, obj, attribute):
        # A dict's keys come before its methods: a custom field named "items" or "values" is data.
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        if isinstance(obj, Undefined):
            return obj  # missing.anything is missing too (an unsafe one stays unsafe)
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj, attr, value):
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if callable(value):
            return attr in SAFE_METHODS.get(type(obj), ())
        return True

    def wrap_str_format(self, value):
        return None  # str.format is not on the method allow-list; refuse it like any other method

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
        _tick()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context, operator, left, right):
        _tick()
        if operator == "*" and (_repeat_too_long(left, right) or _repeat_too_long(right, left)):
            raise SecurityError(f"Repeating a value to more than {MAX_REPEAT:,} items or {MAX_STRING:,} characters "
                                "is not allowed.")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_POWER:
            raise SecurityError(f"Exponents above {MAX_POWER} are not allowed.")
        if operator in ("*", "**") and _int_too_big(operator, left, right):
            raise SecurityError(f"Numbers over {MAX_INT_BITS:,} bits are not allowed.")
        if operator == "%" and isinstance(left, str):
            raise SecurityError("String formatting with % is not available in merge tags.")
        if operator == "+" and isinstance(left, (str, list, tuple)) and _too_big(left, right):
            raise SecurityError(f"+ would build a value over {MAX_STRING:,} characters.")
        return super().call_binop(context, operator, left, right)

    # The guards the compiled templates call (BoundedCodeGenerator).
    def guard_loop(self, iterable):
        budget = _current_budget()
        for item in iterable:
            budget.iterations += 1
            if budget.iterations > MAX_LOOP_ITERATIONS:
                raise SecurityError(f"Loops may run at most {MAX_LOOP_ITERATIONS:,} times in one email.")
            if time.monotonic() > budget.deadline:
                raise SecurityError(TOO_SLOW)
            yield item

    def count_output(self, value):
        # On every output of every send: kept cheap (the deadline is checked by the costly operations).
        budget = _budget.get() or _current_budget()
        budget.output += len(value) if isinstance(value, str) else _size(value, MAX_OUTPUT)
        if budget.output > MAX_OUTPUT:
            raise SecurityError(f"The email would be longer than {MAX_OUTPUT:,} characters.")
        return value

    def checked_concat(self, join, parts):
        _tick()
        if _too_big(*parts):
            raise SecurityError(f"~ would build a string over {MAX_STRING:,} characters.")
        return join(parts)


def _finalize(value):
    return "" if value is None else value


HTML_ENV = EmailSandbox(autoescape=True)
TEXT_ENV = EmailSandbox(autoescape=False)


# --------------------------------------------------------------------------------------------------
# Merge tags through HTML tools

def normalize_merge_tags(source):
    """Undo HTML escaping inside merge tags (`default(&quot;there&quot;)` -> `default("there")`): HTML
    serialisers escape quotes and ampersands in attributes, Jinja needs the expression as written."""
    if "&" not in source:
        return source
    return email_doc.sub_merge_tags(source, lambda tag: html_lib.unescape(tag) if "&" in tag else tag)


def protect(source):
    """(source with each merge tag replaced by a stand-in, the tags)."""
    tags = []

    def stand_in(tag):
        tags.append(tag)
        return f"NuDgEmT{len(tags) - 1}x"
    return email_doc.sub_merge_tags(source, stand_in), tags


def restore(text, tags):
    if not tags:
        return text
    text = COMMENT_TOKEN.sub(lambda m: tags[int(m.group(1))], text)
    return TOKEN.sub(lambda m: tags[int(m.group(1))], text)


def quote_attribute_tags(source):
    """Merge tags inside HTML tags use single quotes for their strings (`href="{{ x | default('a') }}"`),
    so the stored HTML stays well-formed for anything that parses it before the render."""
    if '"' not in source or "{" not in source:
        return source
    protected, tags = protect(source)
    for start, end, opaque in markup_spans(protected):
        if opaque:
            continue
        for token in TOKEN.finditer(protected, start, end):
            index = int(token.group(1))
            if "'" not in tags[index]:
                tags[index] = tags[index].replace('"', "'")
    return restore(protected, tags)


def markup_spans(text):
    """(start, end, opaque) of every comment, raw-text element (<style>, <script>, <title>, <textarea> with
    their content) and tag, leftmost first, comments and raw-text elements opaque: what the regex
    `<!--.*?-->|<(style|script|title|textarea)\\b[^>]*>.*?</\\1\\s*>|<[^<>]*>` (DOTALL, IGNORECASE) finds,
    in linear time. The regex rescans to the end from every unclosed "<!--" or "<style"; here each
    closer found is remembered, and one that is missing stays missing for every later opener."""
    spans, position = [], 0
    comment_closes, next_gt, raw_ends = True, -1, {}
    while True:
        start = text.find("<", position)
        if start < 0:
            return spans
        position = start + 1
        if comment_closes and text.startswith("<!--", start):
            end = text.find("-->", start + 4)
            if end >= 0:
                spans.append((start, end + 3, True))
                position = end + 3
                continue
            comment_closes = False
        element = RAW_TEXT_ELEMENT.match(text, start + 1)
        if element:
            if next_gt is not None and next_gt < element.end():
                next_gt = text.find(">", element.end())
                next_gt = None if next_gt < 0 else next_gt
            if next_gt is not None:
                end = _raw_text_end(text, element.group(1).lower(), next_gt + 1, raw_ends)
                if end is not None:
                    spans.append((start, end, True))
                    position = end
                    continue
        angle = ANGLE.search(text, start + 1)
        if angle is not None and text[angle.start()] == ">":
            spans.append((start, angle.end(), text.startswith("<!--", start)))  # "<!-->" is a comment too
            position = angle.end()


def _raw_text_end(text, name, after, found):
    """End of the first </name> at or after `after`; found[name] remembers the last one seen (None: none)."""
    last = found.get(name, (-1, -1))
    if last is None:
        return None
    if last[0] < after:
        match = RAW_TEXT_END[name].search(text, after)
        last = found[name] = (match.start(), match.end()) if match else None
    return last[1] if last else None


def _tokens_as_comments(text):
    """Stand-ins in element content become HTML comments, which an HTML5 parser leaves in place (bare
    text between table rows would be moved out of the table); in tags and raw text they stay as they are."""
    out, position = [], 0
    for start, end, _ in markup_spans(text):
        out.append(TOKEN.sub(r"<!--\g<0>-->", text[position:start]))
        out.append(text[start:end])
        position = end
    out.append(TOKEN.sub(r"<!--\g<0>-->", text[position:]))
    return "".join(out)


INLINER = css_inline.CSSInliner(keep_style_tags=True, keep_link_tags=True, load_remote_stylesheets=False)


def inline_css(source):
    """Raw HTML with its <style> rules copied onto the elements (what Gmail and Outlook need); the
    <style> blocks stay for media queries, remote stylesheets are never fetched, merge tags survive."""
    protected, tags = protect(source)
    try:
        inlined = INLINER.inline(_tokens_as_comments(protected))
    except (ValueError, css_inline.InlineError) as exc:
        raise ValidationError("The HTML's CSS could not be inlined.",
                              [{"field": "content", "issue": f"CSS: {exc}"}]) from exc
    return restore(inlined, tags)


# --------------------------------------------------------------------------------------------------
# MJML

VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                           "source", "track", "wbr"})
MJML_TOKEN = re.compile(r"<!--.*?-->|<(/?)([A-Za-z][\w:.-]*)((?:\s+[^\s=<>\"'/]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'))?)*)"
                        r"\s*(/?)>|<", re.S)
POSITION = re.compile(r"\s*at position (\d+)(?::\d+)?")


def _line_at(text, offset):
    return text.count("\n", 0, offset) + 1


def _blank_merge_tags(source):
    """The source with merge tags blanked out, newlines kept, so offsets still give the user's lines."""
    return email_doc.sub_merge_tags(source, lambda tag: re.sub(r"[^\n]", " ", tag))


def diagnose_mjml(source):
    """'Line N: what is wrong' for MJML the converter refused, or None when no cause is found."""
    text = _blank_merge_tags(source)
    stack = []
    for match in MJML_TOKEN.finditer(text):
        if match.group().startswith("<!--"):
            continue
        line = _line_at(text, match.start())
        if match.group(2) is None:
            following = text[match.start():match.start() + 20].split("\n")[0]
            if re.match(r"<[A-Za-z]", following):
                return f"Line {line}: the tag {following!r}… is malformed (attribute values need quotes)."
            return f"Line {line}: a '<' that does not start a tag; write &lt; for a literal '<'."
        closing, name, self_closing = match.group(1), match.group(2).lower(), match.group(4)
        if name == "mj-include":
            return f"Line {line}: <mj-include> is not available; paste the included MJML instead."
        if closing:
            if stack and stack[-1][0] == name:
                stack.pop()
                if name == "mjml" and text[match.end():].strip():
                    return f"Line {line}: content after </mjml>."
                continue
            opened = next((entry for entry in reversed(stack) if entry[0] == name), None)
            if opened is None:
                return f"Line {line}: </{name}> closes nothing."
            return f"Line {stack[-1][1]}: <{stack[-1][0]}> is not closed before </{name}> on line {line}."
        if not self_closing and name not in VOID_ELEMENTS:
            stack.append((name, line))
    if stack:
        return f"Line {stack[-1][1]}: <{stack[-1][0]}> is never closed."
    if not re.match(r"\s*(<!--.*?-->\s*)*<mjml[\s>]", text, re.S):
        return "Line 1: MJML starts with <mjml>."
    return None


def mjml_to_html(source, field_name="content"):
    """MJML -> HTML with mjml-python (MRML), merge tags and comments carried through by the block
    document's converter; an error names the line of the source."""
    try:
        return email_doc.mjml_to_html(source)
    except Exception as exc:  # MRML raises ValueError; anything from the converter means invalid input
        issue = diagnose_mjml(source) or POSITION.sub("", str(exc)).strip().rstrip(".") + "."
        raise ValidationError(f"The MJML is not valid: {issue}", [{"field": field_name, "issue": issue}]) from exc


def document_to_html(doc, base_url):
    """A validated block document -> MJML -> HTML."""
    try:
        return email_doc.to_html(doc, base_url=base_url)
    except ValueError as exc:
        raise ValidationError(f"The document could not be compiled: {exc}",
                              [{"field": "content_json", "issue": str(exc)}]) from exc


# --------------------------------------------------------------------------------------------------
# Jinja checks, with the line of the source the user wrote

class _TemplateProblem(Exception):
    def __init__(self, line, message):
        super().__init__(message)
        self.line, self.message = line, message


def _policy_problems(tree):
    """Constructs the sandbox refuses at save time, with their lines."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(name, str) and name.startswith("_"):
            yield node.lineno, f"'{name}' is not available in merge tags (names starting with _ are blocked)."
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        yield node.lineno, "Emails cannot include, import or extend other templates."
    for node in tree.find_all((nodes.Macro, nodes.CallBlock)):
        yield node.lineno, "Macros are not available in email templates."
    for node in tree.find_all((nodes.ScopedEvalContextModifier, nodes.EvalContextModifier)):
        yield node.lineno, "{% autoescape %} is not available: merge tag values are always escaped."
    for node in tree.find_all(nodes.For):
        if node.recursive:
            yield node.lineno, "Recursive loops are not available."
        if _loop_depth(node) > MAX_LOOP_DEPTH:
            yield node.lineno, f"Loops may be nested at most {MAX_LOOP_DEPTH} deep."


def _loop_depth(node):
    inner = [_loop_depth(child) for child in node.iter_child_nodes() if isinstance(child, nodes.Node)]
    return (1 if isinstance(node, nodes.For) else 0) + max(inner, default=0)


# Jinja's parser messages -> plain words (the line is added by the caller). First match wins.
SYNTAX_WORDS = (
    (re.compile(r"unexpected end of template, expected 'end of print statement'"),
     lambda m: "a merge tag is not closed: add }}"),
    (re.compile(r"unexpected end of template, expected 'end of statement block'"),
     lambda m: "a {% … %} tag is not closed: add %}"),
    (re.compile(r"Encountered unknown tag 'end(\w+)'.*innermost block that needs to be closed is '(\w+)'", re.S),
     lambda m: f"{{% end{m[1]} %}} does not match the open {{% {m[2]} %}}: close it with {{% end{m[2]} %}} first"),
    (re.compile(r"(?i)unexpected end of template.*innermost block that needs to be closed is '(\w+)'", re.S),
     lambda m: f"a {{% {m[1]} %}} is never closed: add {{% end{m[1]} %}}"),
    (re.compile(r"Encountered unknown tag '(\w+)'"),
     lambda m: f"{{% {m[1]} %}} is not something a template can do (use if, for or set)"),
    (re.compile(r"unexpected '\}'"),
     lambda m: "a merge tag is not closed properly: end {{ … with }} and {% … with %}"),
    (re.compile(r"^unexpected '(.+)'$"),
     lambda m: "a merge tag is not closed: end {{ … with }} and {% … with %}"),
    (re.compile(r"expected token 'end of print statement', got '(.*)'"),
     lambda m: f"unexpected '{m[1]}' inside a merge tag: a merge tag holds one name such as contact.first_name, "
               "its parts joined by dots"),
    (re.compile(r"expected token 'name', got 'end of print statement'"),
     lambda m: "a | in a merge tag needs a filter name after it, such as | default(\"there\")"),
    (re.compile(r"expected token '[^']*', got '([^']*)'"),
     lambda m: f"a merge tag is not closed or holds an unexpected '{m[1]}': end {{{{ … with }}}} and "
               "{% … with %}"),
    (re.compile(r"Expected an expression, got 'end of (print statement|statement block)'"),
     lambda m: "a merge tag is empty: write a name inside it, such as {{ contact.first_name }}"
     if m[1] == "print statement" else "a {% … %} tag is missing its condition or value"),
    (re.compile(r"unexpected char '(.)'"),
     lambda m: f"the character {m[1]} cannot be used here"
               + (": a quoted text is not closed" if m[1] in "\"'" else "")),
)
JINJA_WORDS = (("end of print statement", "}}"), ("end of statement block", "%}"), ("end of template", "the end"))


def plain_syntax_message(message):
    """A Jinja syntax error in plain words ("a merge tag is not closed: add }}")."""
    for pattern, words in SYNTAX_WORDS:
        match = pattern.search(message)
        if match:
            return words(match) + "."
    for jinja, plain in JINJA_WORDS:
        message = message.replace(jinja, plain)
    return message


def _syntax_message(exc):
    message = exc.message or str(exc)
    if message.startswith("No filter named"):
        return message + " Available filters: " + ", ".join(sorted(FILTERS)) + "."
    return plain_syntax_message(message)


def _template_line(exc):
    """The template line a render error came from (Jinja rewrites tracebacks to template lines)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


TOO_DEEP = "A merge tag is too complex: nested or chained hundreds of levels deep."


def _check_merge_tag_size(source):
    spans, unclosed = email_doc.scan_merge_tags(source)
    code = sum(end - start for start, end in spans) + (len(source) - unclosed if unclosed is not None else 0)
    if code > MAX_MERGE_TAG_CHARS:
        raise _TemplateProblem(None, f"The merge tags add up to {code / 1024:,.0f} KB of code; a template's merge "
                                     f"tags may hold at most {MAX_MERGE_TAG_CHARS // 1024} KB.")


def check_template(source, env=HTML_ENV):
    """The compiled Jinja template of a source; raises _TemplateProblem for syntax errors, sandbox
    violations and errors of a trial render with a sample contact."""
    _check_merge_tag_size(source)
    try:
        tree = env.parse(source)
        problems = list(_policy_problems(tree))
        if problems:
            raise _TemplateProblem(*problems[0])
        # from the parsed tree: parsing a large source again would double the cost of the check
        template = env.template_class.from_code(env, env.compile(tree), env.make_globals(None), None)
    except TemplateSyntaxError as exc:
        raise _TemplateProblem(exc.lineno, _syntax_message(exc)) from exc
    except RecursionError:  # Jinja's parser and compiler recurse once per nesting level
        raise _TemplateProblem(None, TOO_DEEP) from None
    try:
        template.render(sample_context(base_url="https://example.com"))
    except Exception as exc:  # noqa: BLE001 - any failure of the trial render is the template's fault
        message = str(exc) if isinstance(exc, (SecurityError, TemplateError)) else f"{type(exc).__name__}: {exc}"
        raise _TemplateProblem(_template_line(exc), message) from exc
    return template


def _issue(problem, multiline=True):
    if problem.line is None or not multiline:
        return problem.message
    return f"Line {problem.line}: {problem.message}"


def _checked(source, field_name, env=HTML_ENV):
    try:
        return check_template(source, env)
    except _TemplateProblem as problem:
        issue = _issue(problem)
        raise ValidationError(f"The template has an error: {issue}", [{"field": field_name, "issue": issue}]) from None


def _document_strings(value, path=""):
    """(path, string) for every string in a content_json document, paths like blocks[2].columns[1].blocks[0].href."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _document_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _document_strings(item, f"{path}[{index}]")


def check_document(doc):
    """Every merge tag of a block document, checked field by field so an error names its block."""
    problems = []
    for path, text in _document_strings(doc):
        if "{" not in text:
            continue
        try:
            check_template(normalize_merge_tags(text))
        except _TemplateProblem as problem:
            problems.append({"field": path, "issue": _issue(problem, multiline="\n" in text)})
    if problems:
        raise ValidationError(f"The template has an error: {problems[0]['issue']}", problems)


# --------------------------------------------------------------------------------------------------
# Merge tag names: every name a template reads must exist, or it goes out blank

ACCOUNT_MERGE_FIELDS = ("name", "postal_address", "default_from_name", "default_from_email")
LINK_VARIABLES = tuple(PREVIEW_PATHS)


def known_merge_tags(custom_names=()):
    """Every merge tag a recipient's context can fill (see build_context), for an account's custom fields."""
    known = {f"contact.{name}" for name in CONTACT_BUILTINS} | {f"account.{name}" for name in ACCOUNT_MERGE_FIELDS}
    known |= {f"contact.custom.{name}" for name in custom_names}
    known |= {f"contact.{name}" for name in custom_names if name not in SHADOW_PROOF}
    return known | set(LINK_VARIABLES)


def _path(node):
    """The dotted name a Getattr/Getitem chain reads ("contact.custom.plan"), cut where a part is computed
    (contact[name]), or None when it does not start from a plain variable."""
    parts = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            parts.append(node.arg.value)
        else:
            parts = []  # a computed key: only the part before it can be checked
        node = node.node
    if not isinstance(node, nodes.Name):
        return None
    return [node.name] + parts[::-1]


def _checked_depth(path):
    """How much of a path names context variables: contact.custom.<x>, contact.<x>, account.<x> or a link;
    what follows (contact.first_name.upper) is the value's own business."""
    if path[:2] == ["contact", "custom"]:
        return 3
    return 2 if path[0] in ("contact", "account") else 1


def _unknown_in_tree(tree, env, known):
    """(line, tag) of every name read from the context that build_context does not provide."""
    free = meta.find_undeclared_variables(tree) - set(env.globals)
    roots = {name.split(".")[0] for name in known}
    inner = {id(node.node) for node in tree.find_all((nodes.Getattr, nodes.Getitem))}
    seen = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) in inner or (isinstance(node, nodes.Name) and node.ctx != "load"):
            continue
        path = _path(node)
        if not path or path[0] not in free:
            continue  # a loop variable, a {% set %} name or a literal
        tag = ".".join(path[:_checked_depth(path)])
        if path[0] in roots and len(path) < _checked_depth(path) and tag != "contact.custom":
            continue  # `contact` or `account` on its own (contact.tags | length, account | ...)
        if tag not in known and tag not in ("contact", "account", "contact.custom") and tag not in seen:
            seen.add(tag)
            yield node.lineno, tag


def suggest_merge_tag(tag, known):
    """The closest real merge tag to a misspelled one, or None: first a sibling (contact.firstname ->
    contact.first_name), then the same name under another variable (first_name -> contact.first_name).
    Names are compared without their common prefix, which would make every contact.* look alike."""
    head, _, name = tag.rpartition(".")
    siblings = {other.rpartition(".")[2]: other for other in known if other.rpartition(".")[0] == head}
    close = difflib.get_close_matches(name, sorted(siblings), n=1, cutoff=0.6)
    if close:
        return siblings[close[0]]
    anywhere = {}
    for other in sorted(known):
        anywhere.setdefault(other.rpartition(".")[2], other)
    close = difflib.get_close_matches(name, sorted(anywhere), n=1, cutoff=0.8)
    return anywhere[close[0]] if close else None


def unknown_merge_tags(source, custom_names=(), env=None):
    """[{"line", "tag", "suggestion", "message"}] for every merge tag of a source that names nothing
    (a misspelled field renders empty: "Hello ,"). The compiled Jinja tree is walked, not the text, so
    {% for %} and {% set %} names are told apart from context variables. A source that does not parse
    gives [] (its syntax error is reported by check_template)."""
    if not source or "{" not in source:
        return []
    env = env or TEXT_ENV
    try:
        _check_merge_tag_size(source)
        tree = env.parse(source)
    except (_TemplateProblem, TemplateSyntaxError, RecursionError):
        return []
    known = known_merge_tags(custom_names)
    problems = []
    for line, tag in _unknown_in_tree(tree, env, known):
        suggestion = suggest_merge_tag(tag, known)
        hint = f"did you mean {suggestion}?" if suggestion else "see the merge tag list in the editor."
        problems.append({"line": line, "tag": tag, "suggestion": suggestion,
                         "message": f"{{{{ {tag} }}}} is not a merge tag and would be blank: {hint}"})
    return problems


# --------------------------------------------------------------------------------------------------
# The plain-text part

SKIP_ELEMENTS = frozenset({"head", "style", "script", "title", "noscript", "template", "svg", "object", "iframe",
                           "select", "textarea", "video", "audio"})
PARAGRAPH_ELEMENTS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "pre",
                                "dl", "figure", "address"})
LINE_ELEMENTS = frozenset({"div", "li", "tr", "section", "article", "header", "footer", "center", "dt", "dd",
                           "tbody", "thead", "tfoot", "nav", "main", "form", "figcaption", "caption"})
MJ_COLUMN = re.compile(r"\bmj-column-(?:per|px)-")
HIDDEN_STYLE = re.compile(r"display\s*:\s*none|mso-hide\s*:\s*all", re.I)
SPACES = re.compile(r"[ \t\r\n\f\v\xa0]+")
INVISIBLE = re.compile("[\u00ad\u034f\u200b\u200c\u200d\u2060\ufeff]")


class _TextWriter(HTMLParser):
    """HTML -> readable plain text: paragraphs and line breaks, "# " headings, "- " and "1. " lists,
    links as "Label (https://...)", table cells of a row on one line; hidden content (the preheader),
    <head>, CSS and scripts dropped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.pending = 0          # newlines owed before the next text
        self.line_start = True
        self.prefix = ""          # a heading marker or list bullet waiting for its first text
        self.separator = ""       # " | " between the cells of a table row
        self.skip = 0
        self.stack = []           # (tag, hides its content, is an MJML column)
        self.lists = []           # [tag, items so far]
        self.links = []           # [href, index into parts, image alt]
        self.rows = []            # whether the current table row has shown text
        self.pre = 0
        self.open_columns = []    # (stack index, index into parts) of open MJML columns
        self.columns = {}         # stack index of a column -> [(start, end) into parts] of its closed siblings

    # ---- output
    def _block(self, newlines):
        self.pending = max(self.pending, newlines)
        self.separator = ""

    def _emit(self, text):
        if self.pending and self.parts:
            self.parts.append("\n" * self.pending)
            self.line_start = True
        self.pending = 0
        if self.line_start:
            text = text.lstrip(" ")
            if not text:
                return
            indent = "   " * max(0, len(self.lists) - 1) if self.lists else ""
            self.parts.append(indent + self.prefix)
            self.prefix = ""
        elif self.separator:
            self.parts.append(self.separator)
        self.separator = ""
        self.parts.append(text)
        self.line_start = text.endswith("\n")
        if self.rows:
            self.rows[-1] = True

    def handle_data(self, data):
        if self.skip:
            return
        data = INVISIBLE.sub("", data)
        if not self.pre:
            data = SPACES.sub(" ", data)
            if data == " " and (self.line_start or self.pending or (self.parts and self.parts[-1].endswith(" "))):
                return
        if data:
            self._emit(data)

    # ---- structure
    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in VOID_ELEMENTS:
            if not self.skip:
                self._void(tag, attrs)
            return
        hides = tag in SKIP_ELEMENTS or "hidden" in attrs or bool(HIDDEN_STYLE.search(attrs.get("style") or ""))
        column = not self.skip and tag == "div" and bool(MJ_COLUMN.search(attrs.get("class") or ""))
        self.stack.append((tag, hides, column))
        if column:
            self.open_columns.append((len(self.stack) - 1, len(self.parts)))
        if hides:
            self.skip += 1
        if self.skip:
            return
        self._open(tag, attrs)

    def handle_startendtag(self, tag, attrs):
        if tag in VOID_ELEMENTS:
            self.handle_starttag(tag, attrs)
        else:
            self.handle_starttag(tag, attrs)
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if not any(entry[0] == tag for entry in self.stack):
            return
        while self.stack:
            open_tag, hides, column = self.stack.pop()
            if not self.skip:
                self._close(open_tag)
            if column and self.open_columns:
                index, start = self.open_columns.pop()
                self.columns.setdefault(index, []).append((start, len(self.parts)))
            siblings = self.columns.pop(len(self.stack) + 1, None)
            if siblings:
                self._join_columns(siblings)
            if hides:
                self.skip -= 1
            if open_tag == tag:
                break

    def _join_columns(self, spans):
        """Columns of one short line each (an order line, "Vase × 1 | $38.00") read best side by side."""
        if len(spans) < 2 or self.links:
            return
        first, covered, texts = spans[0][0], set(), []
        for start, end in spans:
            covered.update(range(start, end))
            text = "".join(self.parts[start:end]).strip()
            if "\n" in text:
                return
            if text:
                texts.append(text)
        between = "".join(part for index, part in enumerate(self.parts[first:], first) if index not in covered)
        joined = " | ".join(texts)
        if len(texts) < 2 or between.strip() or len(joined) > 100:
            return
        head = "".join(self.parts[first:spans[0][1]])
        self.parts[first:] = [head[:len(head) - len(head.lstrip("\n"))] + joined]
        self.line_start = False

    def _void(self, tag, attrs):
        if tag == "br":
            if self.pending and self.parts:
                self._emit("")
            self.parts.append("\n")
            self.line_start = True
            self.separator = ""
        elif tag == "hr":
            self._block(2)
            self._emit("-" * 24)
            self._block(2)
        elif tag == "img" and self.links and not self.links[-1][2]:
            self.links[-1][2] = SPACES.sub(" ", attrs.get("alt") or "").strip()

    def _open(self, tag, attrs):
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._block(2)
            self.prefix = "#" * min(int(tag[1]), 3) + " "
        elif tag in ("ul", "ol"):
            self._block(1 if self.lists else 2)
            self.lists.append([tag, 0])
        elif tag == "li":
            self._block(1)
            if self.lists:
                self.lists[-1][1] += 1
                kind, number = self.lists[-1]
                self.prefix = f"{number}. " if kind == "ol" else "- "
            else:
                self.prefix = "- "
        elif tag == "tr":
            self._block(1)
            self.rows.append(False)
        elif tag in ("td", "th"):
            if self.rows and self.rows[-1] and not self.line_start:
                self.separator = " | "
        elif tag == "a":
            self.links.append([(attrs.get("href") or "").strip(), len(self.parts), ""])
        elif tag == "pre":
            self._block(2)
            self.pre += 1
        elif tag in PARAGRAPH_ELEMENTS:
            self._block(2)
        elif tag in LINE_ELEMENTS:
            self._block(1)

    def _close(self, tag):
        if tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self._block(1 if self.lists else 2)
        elif tag == "tr":
            if self.rows:
                self.rows.pop()
            self._block(1)
        elif tag == "a":
            if self.links:
                self._end_link(*self.links.pop())
        elif tag == "pre":
            self.pre -= 1
            self._block(2)
        elif tag in PARAGRAPH_ELEMENTS or tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._block(2)
        elif tag in LINE_ELEMENTS:
            self._block(1)

    def _end_link(self, href, start, alt):
        if not href or href.startswith("#") or href.lower().startswith("javascript:"):
            return
        shown = href[7:] if href.lower().startswith("mailto:") else href
        label = SPACES.sub(" ", "".join(self.parts[start:])).strip()
        if not label:
            self._emit(f"{alt} ({shown})" if alt else shown)
        elif label not in (shown, href):
            self.parts.append(f" ({shown})")
            self.line_start = False

    def text(self):
        lines = "".join(self.parts).split("\n")
        return BLANK_LINES.sub("\n\n", "\n".join(line.rstrip() for line in lines)).strip() + "\n"


def html_to_text(source):
    """The plain-text part of an HTML email, its merge tags left exactly as written."""
    protected, tags = protect(source)
    writer = _TextWriter()
    writer.feed(protected)
    writer.close()
    return restore(writer.text(), tags)


# --------------------------------------------------------------------------------------------------
# Content warnings

class _Inventory(HTMLParser):
    """Images and links of an HTML email (commented-out Outlook markup is not looked at)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "a" and "href" in attrs:
            self.links.append((attrs.get("href") or "").strip())

    handle_startendtag = handle_starttag


def _is_pixel(attrs):
    return any(str(attrs.get(key) or "").strip().rstrip("px") in ("0", "1") for key in ("width", "height"))


def _examples(items, limit=3):
    shown = ", ".join(repr(item[:80]) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _link_ok(href):
    return href.lower().startswith(("http://", "https://", "mailto:", "{{"))


def has_postal_tag(text):
    """Whether a {{ ... }} tag names account.postal_address, as the regex
    `\\{\\{[^}]*\\baccount\\.postal_address\\b` would say but in linear time (that regex rescans from
    every "{{"): cut at each "}", only what follows a piece's first "{{" can hold the reference."""
    for piece in text.split("}"):
        opener = piece.find("{{")
        if opener >= 0 and POSTAL_REFERENCE.search(piece, opener + 2):
            return True
    return False


def check_content(html, text=None):
    """Warnings about a compiled email, its HTML and (when given) its text part: [{"code", "message"}],
    an empty list when all is well. The unsubscribe link and postal address must be in both parts."""
    warnings = []
    size = len(html.encode())
    if size > GMAIL_CLIP_BYTES:
        warnings.append({"code": "size", "message": f"The email is {size / 1024:.0f} KB: Gmail clips messages over "
                                                    "102 KB and hides the rest, the unsubscribe link included, "
                                                    "behind \"View entire message\"."})
    protected, tags = protect(html)
    inventory = _Inventory()
    inventory.feed(protected)
    inventory.close()
    missing_alt = [restore(attrs.get("src") or "", tags) for attrs in inventory.images
                   if not (attrs.get("alt") or "").strip() and not _is_pixel(attrs)]
    if missing_alt:
        warnings.append({"code": "image_alt", "message": f"{len(missing_alt)} image(s) have no alt text, which "
                                                         "people with images off or using screen readers see instead: "
                                                         + _examples(missing_alt) + "."})
    hrefs = [restore(href, tags) for href in inventory.links]
    bad_links = [href or "(empty)" for href in hrefs if not _link_ok(href)]
    if bad_links:
        warnings.append({"code": "link_scheme", "message": f"{len(bad_links)} link(s) do not start with http://, "
                                                           "https:// or mailto: and will not work in an inbox: "
                                                           + _examples(bad_links) + "."})
    in_text = text is None or bool(UNSUBSCRIBE_TAG.search(text))
    if not in_text or not any(UNSUBSCRIBE_TAG.match(href) for href in hrefs):
        warnings.append({"code": "unsubscribe_missing",
                         "message": "There is no unsubscribe link: add a link to {{ unsubscribe_url }} (the law "
                                    "requires one, and campaigns cannot be sent without it)."})
    if not has_postal_tag(html) or (text is not None and not has_postal_tag(text)):
        warnings.append({"code": "postal_address_missing",
                         "message": "The account's postal address is missing: add {{ account.postal_address }} "
                                    "(the law requires it, and campaigns cannot be sent without it)."})
    return warnings


def merge_tag_warnings(html, custom_names=()):
    """The content warnings for merge tags that name nothing ({"code": "merge_tag_unknown", "message"}):
    a template may be saved with one (the custom field may come later); a campaign cannot be sent."""
    return [{"code": "merge_tag_unknown", "message": problem["message"]}
            for problem in unknown_merge_tags(html, custom_names)]


# --------------------------------------------------------------------------------------------------
# Compiling

@dataclass
class Compiled:
    """A template version's compiled parts, merge tags intact, and the content warnings."""
    html: str
    text: str
    warnings: list = field(default_factory=list)
    # The Jinja templates the checks compiled (html, text), so a preview does not compile them again.
    templates: tuple = field(default=None, repr=False, compare=False)


def _one_source(content_json, mjml, html):
    given = [name for name, value in (("content_json", content_json), ("mjml", mjml), ("html", html))
             if value is not None]
    if len(given) != 1:
        raise ValidationError("Give exactly one of content_json, mjml or html.",
                              [{"field": "content", "issue": "Exactly one of content_json, mjml or html."}])
    if given[0] != "content_json" and not isinstance(mjml if mjml is not None else html, str):
        raise ValidationError("The template source must be text.", [{"field": "content", "issue": "Must be text."}])
    return given[0]


def compile_template(*, content_json=None, mjml=None, html=None, base_url=None):
    """Compile a template once: blocks -> MJML -> HTML, MJML -> HTML, or raw HTML with its CSS inlined;
    then the Jinja checks, the plain-text part and the content warnings. Raises ValidationError with
    the line (or the block field) of any error. The trial renders together stop at RENDER_SECONDS."""
    with time_limit():
        return _compile(content_json, mjml, html, base_url)


def _compile(content_json, mjml, html, base_url):
    kind = _one_source(content_json, mjml, html)
    if kind == "content_json":
        doc = email_doc.validate_document(content_json)
        check_document(doc)
        compiled_html = document_to_html(doc, base_url)
    else:
        source = mjml if kind == "mjml" else html
        email_doc.check_source_size(len(source.encode()), "content")
        source = normalize_merge_tags(source)
        _checked(source, "content")
        compiled_html = mjml_to_html(source) if kind == "mjml" else inline_css(source)
    compiled_html = quote_attribute_tags(normalize_merge_tags(compiled_html))
    html_template = _checked(compiled_html, "content")
    text = html_to_text(compiled_html)
    text_template = _checked(text, "content", TEXT_ENV)
    return Compiled(html=compiled_html, text=text, warnings=check_content(compiled_html, text),
                    templates=(html_template, text_template))


# --------------------------------------------------------------------------------------------------
# Per-recipient rendering, compiled once per version

class CompiledVersion:
    """The Jinja templates of one template version: render() is all a send does per recipient."""
    __slots__ = ("html_template", "text_template", "tidy_text")

    def __init__(self, html, text, templates=None):
        self.html_template, self.text_template = templates or (HTML_ENV.from_string(html), TEXT_ENV.from_string(text))
        # Only {% %} blocks can leave runs of blank lines in the text part.
        self.tidy_text = "{%" in text

    def render(self, context):
        """(html, text) for one recipient's context (see build_context)."""
        try:
            with time_limit():  # the html and text parts share one render budget
                html = self.html_template.render(context)
                text = self.text_template.render(context)
        except Exception as exc:  # noqa: BLE001 - a recipient's render failing must not crash a batch silently
            line = _template_line(exc)
            issue = (f"Line {line}: " if line else "") + str(exc)
            raise ValidationError(f"The email could not be personalised: {issue}",
                                  [{"field": "content", "issue": issue}]) from exc
        if self.tidy_text and "\n\n\n" in text:
            text = BLANK_LINES.sub("\n\n", text)
        return html, text


class _LRU:
    """A small thread-safe least-recently-used map (Huey and gunicorn threads share it)."""

    def __init__(self, size):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key, value):
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value

    def clear(self):
        with self.lock:
            self.items.clear()


_versions = _LRU(CACHE_SIZE)


def compiled_version(version):
    """The cached CompiledVersion of a TemplateVersion (versions are immutable, so the id is the key)."""
    hit = _versions.get(version.id)
    if hit is None:
        text = getattr(version, "content_text", None)
        if text is None:
            text = html_to_text(version.content_html)
        hit = _versions.put(version.id, CompiledVersion(version.content_html, text))
    return hit


def render_version(version, context):
    """(html, text) of a template version for one recipient's context."""
    return compiled_version(version).render(context)


# --------------------------------------------------------------------------------------------------
# Contexts

def _value(value):
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def contact_fields(contact):
    """A contact (model or dict, as the API's render endpoint takes it) as the plain dict merge tags see:
    built-in fields, custom fields at contact.custom.<name> and, unless a built-in has the name, at
    contact.<name>. Empty values are left out, so they render empty and `default` applies."""
    if contact is None:
        contact = SAMPLE_CONTACT
    if isinstance(contact, dict):
        custom = contact.get("custom_fields", contact.get("custom")) or {}
        get = contact.get
    else:
        custom = getattr(contact, "custom_fields", None) or {}

        def get(name):
            return getattr(contact, name, None)
    if not isinstance(custom, dict):
        raise ValidationError("Custom fields must be an object.",
                              [{"field": "contact.custom_fields", "issue": "Must be an object."}])
    fields = {}
    for name in CONTACT_BUILTINS:
        value = _value(get(name))
        if value is not None and value != "":
            fields[name] = value
    tags = fields.get("tags")
    fields["tags"] = [str(tag) for tag in tags] if isinstance(tags, (list, tuple)) else []
    custom = {str(name): _value(value) for name, value in custom.items() if value is not None and value != ""}
    fields["custom"] = custom
    for name, value in custom.items():
        if name not in SHADOW_PROOF:
            fields[name] = value
    return fields


def _one_line(address):
    """A postal address on one line ("1 Main St, Springfield"): it reads right in HTML and text alike."""
    return ", ".join(line.strip() for line in str(address).splitlines() if line.strip())


def account_fields(account):
    """The account's name, postal address and default sender, as merge tags see them."""
    if account is None:
        account = SAMPLE_ACCOUNT
    get = account.get if isinstance(account, dict) else (lambda name: getattr(account, name, None))
    fields = {name: get(name) for name in ("name", "postal_address", "default_from_name", "default_from_email")}
    if fields["postal_address"]:
        fields["postal_address"] = _one_line(fields["postal_address"])
    return {name: value for name, value in fields.items() if value}


def build_context(account, contact, *, unsubscribe_url, preferences_url, view_in_browser_url):
    """The variables of one recipient's render."""
    return {"contact": contact_fields(contact), "account": account_fields(account),
            "unsubscribe_url": unsubscribe_url, "preferences_url": preferences_url,
            "view_in_browser_url": view_in_browser_url}


def preview_urls(base_url):
    """Stand-in links for previews: real http(s) URLs, so link checks treat them like the real ones."""
    base = (base_url or "").rstrip("/")
    return {name: base + path for name, path in PREVIEW_PATHS.items()}


def sample_context(account=None, *, base_url=None):
    """The context of a preview: the account (or a sample one), Alex Sample, and preview links."""
    if base_url is None:
        base_url = current_app.config["BASE_URL"] if has_app_context() else "https://example.com"
    return build_context(account or SAMPLE_ACCOUNT, SAMPLE_CONTACT, **preview_urls(base_url))


def preview(account, *, content_json=None, mjml=None, html=None, contact=None, base_url):
    """{"html", "text", "warnings"}: a template compiled and rendered for one contact (a sample contact,
    Alex Sample, when none is given), as POST /api/v1/templates/render and the editor preview show it."""
    if contact is not None and not isinstance(contact, dict) and not hasattr(contact, "email"):
        raise ValidationError("contact must be an object.", [{"field": "contact", "issue": "Must be an object."}])
    with time_limit():  # the compile's trial renders and this one, together
        compiled = compile_template(content_json=content_json, mjml=mjml, html=html, base_url=base_url)
        context = build_context(account, contact, **preview_urls(base_url))
        rendered_html, rendered_text = CompiledVersion(compiled.html, compiled.text, compiled.templates).render(context)
    return {"html": rendered_html, "text": rendered_text, "warnings": compiled.warnings}
