/*
 * html.c - HTML to readable text with libxml2's HTML parser (fetch.h).
 *
 * The parser builds a tree from whatever a server sends (it recovers from broken markup and
 * never touches the network); a walk over it keeps the text a reader sees: scripts, styles,
 * templates and forms' hidden parts are dropped, block elements start new lines, list items get
 * a dash, table cells are separated, <pre> keeps its spacing and everything else has its runs of
 * whitespace collapsed to one space.
 */
#include "fetch.h"

#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
#include <string.h>
#include <strings.h>

struct walk {
    struct ag_buf *out;
    bool space;  /* a space is pending before the next word */
    int newline; /* newlines pending (0..2) */
    int pre;     /* inside <pre> */
};

static bool is_named(const xmlNode *n, const char *const *names)
{
    for (size_t i = 0; names[i]; i++)
        if (strcasecmp((const char *)n->name, names[i]) == 0) return true;
    return false;
}

static const char *const skipped[] = {"script", "style",  "noscript", "template", "head",   "svg",
                                      "iframe", "object", "button",   "select",   "canvas", NULL};
static const char *const paragraphs[] = {
    "p",   "h1",    "h2",         "h3",     "h4",      "h5",      "h6",     "ul",
    "ol",  "table", "blockquote", "pre",    "section", "article", "header", "footer",
    "nav", "aside", "main",       "figure", "dl",      "form",    "hr",     NULL};
static const char *const lines[] = {"div",     "li",         "tr",      "br",      "dt",      "dd",
                                    "caption", "figcaption", "address", "summary", "details", NULL};

static void want_newlines(struct walk *w, int n)
{
    if (w->out->len == 0) return; /* no blank lines at the top */
    if (w->newline < n) w->newline = n;
    w->space = false;
}

static void put_text(struct walk *w, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool ws = *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f';
        if (w->pre) {
            if (w->newline) {
                for (int i = 0; i < w->newline; i++) ag_buf_putc(w->out, '\n');
                w->newline = 0;
            }
            ag_buf_putc(w->out, (char)*p);
            continue;
        }
        if (ws) {
            if (w->out->len && !w->newline) w->space = true;
            continue;
        }
        if (w->newline) {
            for (int i = 0; i < w->newline; i++) ag_buf_putc(w->out, '\n');
            w->newline = 0;
        } else if (w->space) {
            ag_buf_putc(w->out, ' ');
        }
        w->space = false;
        ag_buf_putc(w->out, (char)*p);
    }
}

static void walk(struct walk *w, const xmlNode *n, int depth)
{
    for (; n; n = n->next) {
        if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
            if (n->content) put_text(w, (const char *)n->content);
            continue;
        }
        if (n->type != XML_ELEMENT_NODE || depth > 256) continue;
        if (is_named(n, skipped)) continue;
        bool para = is_named(n, paragraphs), line = is_named(n, lines);
        bool pre = strcasecmp((const char *)n->name, "pre") == 0;
        bool cell = strcasecmp((const char *)n->name, "td") == 0 ||
                    strcasecmp((const char *)n->name, "th") == 0;
        if (para) want_newlines(w, 2);
        if (line) want_newlines(w, 1);
        if (strcasecmp((const char *)n->name, "li") == 0) put_text(w, "- ");
        if (cell && w->out->len && !w->newline) put_text(w, " | ");
        if (pre) w->pre++;
        walk(w, n->children, depth + 1);
        if (pre) w->pre--;
        if (para) want_newlines(w, 2);
        if (line) want_newlines(w, 1);
    }
}

static const xmlNode *find(const xmlNode *n, const char *name, int depth)
{
    for (; n && depth < 64; n = n->next) {
        if (n->type == XML_ELEMENT_NODE && strcasecmp((const char *)n->name, name) == 0) return n;
        const xmlNode *c = find(n->children, name, depth + 1);
        if (c) return c;
    }
    return NULL;
}

int html_to_text(const char *html, size_t len, const char *charset, struct ag_buf *out,
                 char **title, struct ag_err *err)
{
    if (title) *title = NULL;
    if (len > (size_t)INT32_MAX) return ag_err_set(err, AG_ETOOBIG, "page too large to parse");
    int opts = HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_NONET |
               HTML_PARSE_COMPACT;
    htmlDocPtr doc = htmlReadMemory(html, (int)len, NULL, charset, opts);
    if (!doc && charset) doc = htmlReadMemory(html, (int)len, NULL, NULL, opts);
    if (!doc) return ag_err_set(err, AG_EPARSE, "the page could not be parsed as HTML");
    const xmlNode *root = xmlDocGetRootElement(doc);
    if (title) {
        const xmlNode *t = find(root, "title", 0);
        if (t) {
            xmlChar *s = xmlNodeGetContent(t);
            if (s) {
                struct ag_buf tb;
                ag_buf_init(&tb);
                struct walk tw = {.out = &tb};
                put_text(&tw, (const char *)s);
                struct ag_buf clean;
                ag_buf_init(&clean);
                ag_utf8_append(&clean, tb.data ? tb.data : "", tb.len);
                ag_buf_putc(&clean, '\0');
                ag_buf_release(&tb);
                *title = clean.data;
                xmlFree(s);
            }
        }
    }
    /* The parser passes some broken input through as it came: the text is re-checked. */
    struct ag_buf raw;
    ag_buf_init(&raw);
    struct walk w = {.out = &raw};
    const xmlNode *body = find(root, "body", 0);
    walk(&w, body ? body : root, 0);
    xmlFreeDoc(doc);
    ag_utf8_append(out, raw.data ? raw.data : "", raw.len);
    ag_buf_release(&raw);
    return 0;
}
