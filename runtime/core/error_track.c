#include "error_track.h"
#include "siphash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

/* ---- names ---- */

static const char *const SEVERITY_NAMES[MNEMO_SEV_COUNT] = {
    "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"};
static const char *const CATEGORY_NAMES[MNEMO_CAT_COUNT] = {
    "database", "embedding", "cache", "timeout", "circuit_breaker",
    "parse",    "policy",    "api",   "unknown", "graph"};

const char *mnemo_severity_name(mnemo_severity_t s) {
  return (unsigned)s < MNEMO_SEV_COUNT ? SEVERITY_NAMES[s] : NULL;
}

const char *mnemo_error_category_name(mnemo_error_category_t c) {
  return (unsigned)c < MNEMO_CAT_COUNT ? CATEGORY_NAMES[c] : NULL;
}

/* Their lengths (no strlen: parsing runs on every record). */
static const unsigned char SEVERITY_LENS[MNEMO_SEV_COUNT] = {5, 4, 7, 5, 8};
static const unsigned char CATEGORY_LENS[MNEMO_CAT_COUNT] = {8, 9, 5, 7, 15,
                                                             5, 6, 3, 7, 5};

static int parse_name(const char *const *names, const unsigned char *lens,
                      int count, const char *name, size_t len) {
  int i;
  for (i = 0; i < count; i++)
    if (lens[i] == len && memcmp(names[i], name, len) == 0)
      return i;
  return -1;
}

int mnemo_severity_parse(const char *name, size_t len, mnemo_severity_t *out) {
  int i = parse_name(SEVERITY_NAMES, SEVERITY_LENS, MNEMO_SEV_COUNT, name, len);
  if (i < 0)
    return MNEMO_EINVAL;
  *out = (mnemo_severity_t)i;
  return 0;
}

int mnemo_error_category_parse(const char *name, size_t len,
                               mnemo_error_category_t *out) {
  int i = parse_name(CATEGORY_NAMES, CATEGORY_LENS, MNEMO_CAT_COUNT, name, len);
  if (i < 0)
    return MNEMO_EINVAL;
  *out = (mnemo_error_category_t)i;
  return 0;
}

const char *mnemo_severity_list(void) {
  return "DEBUG, INFO, WARNING, ERROR, CRITICAL";
}

const char *mnemo_error_category_list(void) {
  return "database, embedding, cache, timeout, circuit_breaker, parse, "
         "policy, api, unknown";
}

/* ---- scrubbing ----
 * One left-to-right pass; each rule looks at the text from the current
 * position and either rewrites a span or lets it through. Words are
 * consumed whole, so a rule never fires in the middle of one. ASCII
 * classes only: the locale must not change what is a secret. */

typedef struct sink {
  char *out;
  size_t cap;
  size_t n; /* would-be length, may exceed cap */
} sink_t;

static void put(sink_t *k, const char *p, size_t len) {
  if (k->n < k->cap) {
    size_t room = k->cap - k->n;
    memcpy(k->out + k->n, p, len < room ? len : room);
  }
  k->n += len;
}

/* Character classes, one table lookup each (the scrubber looks at every
 * byte of every message). Built by constant expressions: plain C11. */
enum {
  C_ALNUM = 1,
  C_WORD = 2,  /* a word: alnum _ - */
  C_USER = 4,  /* a user name: alnum . _ - */
  C_TOKEN = 8, /* a bearer token (RFC 6750 b64token): alnum - . _ ~ + / = */
  C_SPACE = 16,
  C_BLANK = 32,
  C_ENDV = 64, /* ends an unquoted secret value */
  C_TRIG = 128 /* may start a rewrite: / : and word starts (alnum _) */
};
#define IS_ALNUM_(c)                                                           \
  (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') ||                 \
   ((c) >= '0' && (c) <= '9'))
#define IS_SPACE_(c)                                                           \
  ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n' || (c) == '\f' ||   \
   (c) == '\v')
#define CLS(c)                                                                 \
  ((IS_ALNUM_(c) ? C_ALNUM | C_WORD | C_USER | C_TOKEN | C_TRIG : 0) |         \
   ((c) == '_' ? C_WORD | C_USER | C_TOKEN | C_TRIG : 0) |                     \
   ((c) == '-' ? C_WORD | C_USER | C_TOKEN : 0) |                              \
   ((c) == '.' ? C_USER | C_TOKEN : 0) |                                       \
   ((c) == '~' || (c) == '+' || (c) == '=' ? C_TOKEN : 0) |                    \
   ((c) == '/' ? C_TOKEN | C_TRIG : 0) | ((c) == ':' ? C_TRIG : 0) |           \
   (IS_SPACE_(c) ? C_SPACE | C_ENDV : 0) |                                     \
   ((c) == ' ' || (c) == '\t' ? C_BLANK : 0) |                                 \
   ((c) == '&' || (c) == ',' || (c) == ';' || (c) == ')' || (c) == ']' ||      \
            (c) == '}' || (c) == '"' || (c) == '\'' || (c) == '<' ||           \
            (c) == '>'                                                         \
        ? C_ENDV                                                               \
        : 0))
#define R4(b) CLS(b), CLS((b) + 1), CLS((b) + 2), CLS((b) + 3)
#define R16(b) R4(b), R4((b) + 4), R4((b) + 8), R4((b) + 12)
#define R64(b) R16(b), R16((b) + 16), R16((b) + 32), R16((b) + 48)
static const unsigned char CLASS[256] = {R64(0), R64(64), R64(128), R64(192)};

/* What a user name, a path segment's start or a word is made of. */
static int is_user_char(unsigned char c) {
  return CLASS[c] & C_USER;
}
static int is_word_char(unsigned char c) {
  return CLASS[c] & C_WORD;
}
static int is_blank(unsigned char c) {
  return CLASS[c] & C_BLANK;
}
static int is_space(unsigned char c) {
  return CLASS[c] & C_SPACE;
}
static unsigned char lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Literal lengths are compile-time constants (sizeof), never strlen: the
 * scrubber runs on every recorded message. */
typedef struct lit {
  const char *s;
  size_t n;
} lit_t;
#define LIT(x)                                                                 \
  { x, sizeof(x) - 1 }

static int ieq(const char *a, size_t n, lit_t lit) {
  size_t i;
  if (n != lit.n)
    return 0;
  for (i = 0; i < n; i++)
    if (lower((unsigned char)a[i]) != (unsigned char)lit.s[i])
      return 0;
  return 1;
}

static int iends(const char *a, size_t n, lit_t lit) {
  return n >= lit.n && ieq(a + n - lit.n, lit.n, lit);
}

#define STARTS(s, len, i, x)                                                   \
  ((len) - (i) >= sizeof(x) - 1 && memcmp((s) + (i), x, sizeof(x) - 1) == 0)

/* The length of a home directory at s[i] ("/home/USER", "/Users/USER",
 * "/root"), or 0. It must start a path: not inside a word or a longer
 * path ("/srv/home/x" is left alone), except after "//" (file:///home/x). */
static size_t home_at(const char *s, size_t len, size_t i) {
  size_t j;
  if (i > 0) {
    unsigned char prev = (unsigned char)s[i - 1];
    if (is_user_char(prev))
      return 0;
    if (prev == '/' && !(i >= 2 && s[i - 2] == '/'))
      return 0;
  }
  if (STARTS(s, len, i, "/home/"))
    j = i + 6;
  else if (STARTS(s, len, i, "/Users/"))
    j = i + 7;
  else if (STARTS(s, len, i, "/root") &&
           (i + 5 == len || !is_user_char((unsigned char)s[i + 5])))
    return 5;
  else
    return 0;
  if (j >= len || !is_user_char((unsigned char)s[j]))
    return 0;
  while (j < len && is_user_char((unsigned char)s[j]))
    j++;
  return j - i;
}

/* A quote at s[i]: 1 for " or ', 2 for \" (JSON inside a string), else 0. */
static size_t quote_at(const char *s, size_t len, size_t i) {
  if (i >= len)
    return 0;
  if (s[i] == '"' || s[i] == '\'')
    return 1;
  if (s[i] == '\\' && i + 1 < len && s[i + 1] == '"')
    return 2;
  return 0;
}

/* Names whose value is a secret. Strong ones match as a word's end
 * ("sslpassword", "client_secret") and may be followed by ':' as well as
 * '='; weak ones ("key", "token") are common words ("unexpected token:"),
 * so they match only whole or after a separator ("api_key", "X-Api-Key"),
 * and take ':' only in such compounds or when quoted. */
static int secret_name(const char *w, size_t n, int *strong) {
  static const lit_t STRONG[] = {LIT("password"), LIT("passwd"), LIT("secret")};
  static const lit_t WEAK[] = {LIT("token"), LIT("key"), LIT("pwd"),
                               LIT("apikey")};
  size_t i;
  for (i = 0; i < sizeof(STRONG) / sizeof(STRONG[0]); i++)
    if (iends(w, n, STRONG[i])) {
      *strong = 1;
      return 1;
    }
  for (i = 0; i < sizeof(WEAK) / sizeof(WEAK[0]); i++) {
    size_t m = WEAK[i].n;
    if (iends(w, n, WEAK[i]) &&
        (n == m || w[n - m - 1] == '_' || w[n - m - 1] == '-')) {
      *strong = 0;
      return 1;
    }
  }
  return 0;
}

static int ends_value(unsigned char c) {
  return CLASS[c] & C_ENDV;
}
static int is_token68(unsigned char c) {
  return CLASS[c] & C_TOKEN;
}

/* Is s[w..) a "name=" (blanks allowed before the '=')? */
static int name_eq_at(const char *s, size_t len, size_t w) {
  size_t x = w;
  while (x < len && is_word_char((unsigned char)s[x]))
    x++;
  if (x == w)
    return 0;
  while (x < len && is_blank((unsigned char)s[x]))
    x++;
  return x < len && s[x] == '=';
}

/* An unquoted connection-string value that ends at a blank, e means
 * "password=two words host=db": libpq takes "words" for the next keyword
 * (and repeats it in its error), but it is the rest of the password. The
 * words up to the next name= are masked too, only when such a name=
 * follows on the same line ("password=x is wrong" is left as it is).
 * Returns the new end of the value. */
static size_t value_words(const char *s, size_t len, size_t e) {
  size_t end = e, w = e, x;
  for (;;) {
    while (w < len && is_blank((unsigned char)s[w]))
      w++;
    if (w == end || w >= len)
      return e; /* no blank, or the end of the text: no name= followed */
    if (name_eq_at(s, len, w))
      return end;
    for (x = w; x < len && !ends_value((unsigned char)s[x]) && s[x] != '='; x++)
      ;
    if (x == w || (x < len && s[x] == '='))
      return e; /* a quote, a separator: not a connection string */
    end = w = x;
  }
}

/* The word s[i..k) was just read. If it names a secret followed by its
 * value, or is "Bearer" followed by a token, writes the masked span and
 * returns where scanning resumes; else returns 0 (nothing written). */
static size_t mask_after_word(sink_t *o, const char *s, size_t len, size_t i,
                              size_t k) {
  size_t m, v, e, q;
  int strong, compound = 0, quoted = 0;

  static const lit_t BEARER = LIT("bearer");
  if (ieq(s + i, k - i, BEARER)) {
    for (m = k; m < len && is_blank((unsigned char)s[m]); m++)
      ;
    if (m == k)
      return 0;
    for (e = m; e < len && is_token68((unsigned char)s[e]); e++)
      ;
    if (e == m)
      return 0;
    put(o, s + i, m - i);
    put(o, "***", 3);
    return e;
  }
  if (!secret_name(s + i, k - i, &strong))
    return 0;
  for (m = i; m < k; m++)
    if (s[m] == '_' || s[m] == '-')
      compound = 1;
  m = k;
  if (i > 0 && (q = quote_at(s, len, m)) != 0 &&
      (s[i - 1] == '"' || s[i - 1] == '\'')) {
    quoted = 1;
    m += q;
  }
  while (m < len && is_blank((unsigned char)s[m]))
    m++;
  if (m >= len)
    return 0;
  if (s[m] == ':') {
    if (!(strong || compound || quoted))
      return 0;
    if (m + 2 < len && s[m + 1] == '/' && s[m + 2] == '/')
      return 0; /* a URL scheme, not a value */
  } else if (s[m] != '=') {
    return 0;
  }
  v = m + 1;
  while (v < len && is_blank((unsigned char)s[v]))
    v++;
  if ((q = quote_at(s, len, v)) != 0) {
    /* A quoted value: up to the same quote (backslash escapes skipped). */
    size_t open = v + q;
    for (e = open; e < len; e++) {
      if (q == 2 ? (s[e] == '\\' && e + 1 < len && s[e + 1] == '"')
                 : s[e] == s[v])
        break;
      if (q == 1 && s[e] == '\\')
        e++;
    }
    if (e == open)
      return 0; /* empty: nothing to hide */
    put(o, s + i, open - i);
    put(o, "***", 3);
    return e < len ? e : len;
  }
  for (e = v; e < len && !ends_value((unsigned char)s[e]); e++)
    ;
  if (e == v)
    return 0;
  if (strong && s[m] == '=')
    e = value_words(s, len, e);
  put(o, s + i, v - i);
  put(o, "***", 3);
  return e;
}

/* What ends a URL in a text: a quote, an angle bracket, a space, a NUL. */
static int ends_url(unsigned char c) {
  return c == '"' || c == '\'' || c == '<' || c == '>' || is_space(c) ||
         c == '\0';
}

/* At "://": masks the password of user:password@host. Returns where
 * scanning resumes (the '@'), or 0. The userinfo ends at the LAST '@'
 * before the path: a password with an unescaped '@' is still all hidden.
 * Without an '@' before the path, a colon followed by anything but a port
 * number is a password too: of a DSN cut short ("postgresql://u:S3cret"),
 * or one holding a '/', '?' or '#' ("u:a/b@host", which libpq itself
 * misreads); it is masked up to the URL's last '@', else to its end. */
static size_t mask_userinfo(sink_t *o, const char *s, size_t len, size_t i) {
  size_t j = i + 3, k, at = 0, colon = 0, m;
  int found = 0;
  for (k = j; k < len; k++) {
    unsigned char c = (unsigned char)s[k];
    if (c == '/' || c == '?' || c == '#' || ends_url(c))
      break;
    if (c == '@') {
      at = k;
      found = 1;
    }
  }
  if (found) {
    for (m = j; m < at; m++)
      if (s[m] == ':') {
        colon = m;
        break;
      }
    if (colon == 0 || colon + 1 == at)
      return 0;
    put(o, s + i, colon + 1 - i);
    put(o, "***", 3);
    return at;
  }
  m = j;
  if (m < k && s[m] == '[') /* [IPv6]:port */
    while (m < k && s[m] != ']')
      m++;
  while (m < k && s[m] != ':')
    m++;
  if (m >= k)
    return 0;
  colon = m;
  for (m = colon + 1; m < k && s[m] >= '0' && s[m] <= '9'; m++)
    ;
  if (m == k || s[m] == ',')
    return 0; /* host:port (or host:port,host2...) */
  for (; k < len && !ends_url((unsigned char)s[k]); k++)
    if (s[k] == '@') {
      at = k;
      found = 1;
    }
  put(o, s + i, colon + 1 - i);
  put(o, "***", 3);
  return found ? at : k;
}

/* Could the word s[i..k) start a secret or a bearer token? Most words
 * are neither: what follows the word and its last letter tell cheaply
 * (passworD, passwD, pwD, secreT, tokeN, keY, apikeY, beareR). */
static int candidate(const char *s, size_t len, size_t i, size_t k) {
  unsigned char next, last;
  if (k - i < 3 || k >= len)
    return 0;
  next = (unsigned char)s[k];
  if (!(next == '=' || next == ':' || is_blank(next) || next == '"' ||
        next == '\'' || next == '\\'))
    return 0;
  last = lower((unsigned char)s[k - 1]);
  if (last == 'r') /* only "bearer" */
    return k - i == 6 && lower((unsigned char)s[i]) == 'b';
  return last == 'd' || last == 't' || last == 'n' || last == 'y';
}

/* ---- the secrets of one connection string ----
 * libpq repeats pieces of a DSN it cannot use, and a piece of a password
 * then comes without "password=" before it: the start of one holding a
 * '/' taken for a port ("invalid integer value "S3c" for connection option
 * "port""), the rest of one holding an '@' taken for a host ("could not
 * translate host name "ret@127.0.0.1""), a word of a value left unquoted
 * ("missing "=" after "PW9""), a value it cannot decode ("invalid
 * percent-encoded token: "S3cr%zz""). Only the DSN tells such a piece is
 * secret: the spans of the DSN that may hold a password are found
 * (generously: a malformed DSN is the case that matters), and the message
 * is scrubbed as mnemo_scrub does, and besides, every occurrence of a span
 * (of 3 bytes or more) and every double-quoted piece that is part of a
 * span, or starts with its end, or ends with its start, is masked. */

#define MAX_SECRETS 16
#define MIN_OVERLAP 3

typedef struct secrets {
  const char *p[MAX_SECRETS];
  size_t n[MAX_SECRETS];
  size_t count;
} secrets_t;

static void add_secret(secrets_t *sec, const char *p, size_t n) {
  if (n > 0 && sec->count < MAX_SECRETS) {
    sec->p[sec->count] = p;
    sec->n[sec->count++] = n;
  }
}

static int is_digit(unsigned char c) {
  return c >= '0' && c <= '9';
}

/* Names of connection options that hold a password: password, sslpassword
 * (and any *passwd), in any case. */
static int password_name(const char *w, size_t n) {
  static const lit_t PASSWORD = LIT("password"), PASSWD = LIT("passwd");
  return iends(w, n, PASSWORD) || iends(w, n, PASSWD);
}

/* A libpq keyword: lower-case letters and '_' (what "name=" must look like
 * for a word after an unquoted password to start the next option). */
static int keyword_like(const char *w, size_t n) {
  size_t i;
  if (n == 0)
    return 0;
  for (i = 0; i < n; i++)
    if (!((w[i] >= 'a' && w[i] <= 'z') || w[i] == '_'))
      return 0;
  return 1;
}

/* scheme://user:PASSWORD@host...?password=PASSWORD, from a = after "://". */
static void uri_secrets(const char *d, size_t n, size_t a, secrets_t *sec) {
  size_t k, at = n, colon, e, q;
  for (k = a; k < n; k++)
    if (d[k] == '@')
      at = k; /* the last one: a password may hold '@', '/', '?' */
  if (at < n) {
    for (colon = a; colon < at && d[colon] != ':'; colon++)
      ;
    if (colon < at)
      add_secret(sec, d + colon + 1, at - colon - 1);
    q = at;
  } else {
    /* No '@': a host:port, or "user:password" cut short. */
    k = a;
    if (k < n && d[k] == '[')
      while (k < n && d[k] != ']')
        k++;
    while (k < n && d[k] != ':' && d[k] != '/' && d[k] != '?')
      k++;
    if (k < n && d[k] == ':') {
      for (e = k + 1; e < n && is_digit((unsigned char)d[e]); e++)
        ;
      if (!(e == n || d[e] == '/' || d[e] == '?' || d[e] == ','))
        add_secret(sec, d + k + 1, n - k - 1);
    }
    q = a;
  }
  while (q < n && d[q] != '?')
    q++;
  while (q < n) { /* ?name=value&name=value */
    size_t name = ++q, eq;
    while (q < n && d[q] != '&')
      q++;
    for (eq = name; eq < q && d[eq] != '='; eq++)
      ;
    if (eq < q && password_name(d + name, eq - name))
      add_secret(sec, d + eq + 1, q - eq - 1);
    else if (eq == q && !keyword_like(d + name, q - name))
      add_secret(sec, d + name, q - name); /* "?S3cret": libpq repeats it */
  }
}

/* name=value name = 'quoted value' ...; libpq's rules: blanks around '=',
 * single quotes, backslash escapes. */
static void kv_secrets(const char *d, size_t n, secrets_t *sec) {
  size_t i = 0, ks, ke, vs, ve, w, we, first;
  while (i < n) {
    while (i < n && is_space((unsigned char)d[i]))
      i++;
    if (i >= n)
      break;
    ks = i;
    while (i < n && !is_space((unsigned char)d[i]) && d[i] != '=')
      i++;
    ke = i;
    while (i < n && is_space((unsigned char)d[i]))
      i++;
    if (i >= n || d[i] != '=') {
      /* A bare word: libpq says `missing "=" after "WORD"`. Unless it
       * looks like a keyword (lower-case letters and '_': a misspelt
       * option, worth showing), it may be a piece of a password, or one
       * given as the whole DSN. */
      if (!keyword_like(d + ks, ke - ks))
        add_secret(sec, d + ks, ke - ks);
      i = ke;
      continue;
    }
    i++;
    while (i < n && is_space((unsigned char)d[i]))
      i++;
    if (i < n && d[i] == '\'') {
      vs = ++i;
      while (i < n && d[i] != '\'')
        i += (d[i] == '\\' && i + 1 < n) ? 2 : 1;
      ve = i < n ? i : n;
      if (i < n)
        i++;
      if (password_name(d + ks, ke - ks))
        add_secret(sec, d + vs, ve - vs);
      continue;
    }
    vs = i;
    while (i < n && !is_space((unsigned char)d[i]))
      i += (d[i] == '\\' && i + 1 < n) ? 2 : 1;
    ve = i < n ? i : n;
    if (!password_name(d + ks, ke - ks))
      continue;
    add_secret(sec, d + vs, ve - vs);
    first = ve;
    /* Words after it up to the next keyword= are the rest of a password
     * left unquoted ("password=two words host=db"). */
    w = ve;
    for (;;) {
      while (w < n && is_space((unsigned char)d[w]))
        w++;
      if (w >= n)
        break;
      for (we = w; we < n && !is_space((unsigned char)d[we]) && d[we] != '=';
           we++)
        ;
      if (keyword_like(d + w, we - w)) {
        size_t x = we;
        while (x < n && is_space((unsigned char)d[x]))
          x++;
        if (x < n && d[x] == '=')
          break;
      }
      while (we < n && !is_space((unsigned char)d[we]))
        we++;
      ve = w = we;
    }
    if (ve > first)
      add_secret(sec, d + vs, ve - vs);
    i = ve;
  }
}

static void find_secrets(const char *d, size_t n, secrets_t *sec) {
  size_t a = 0, k;
  sec->count = 0;
  while (a < n && is_space((unsigned char)d[a]))
    a++;
  for (k = a;
       k < n && (IS_ALNUM_(d[k]) || d[k] == '+' || d[k] == '.' || d[k] == '-');
       k++)
    ;
  if (k > a && STARTS(d, n, k, "://"))
    uri_secrets(d, n, k + 3, sec);
  else /* also a DSN without any '=': its words are bare words */
    kv_secrets(d, n, sec);
}

/* Does s[0..n) hold q[0..m)? */
static int holds(const char *s, size_t n, const char *q, size_t m) {
  size_t i;
  if (m > n)
    return 0;
  for (i = 0; i + m <= n; i++)
    if (memcmp(s + i, q, m) == 0)
      return 1;
  return 0;
}

/* Is the quoted piece q[0..m) part of a secret, or does it start with a
 * secret's end or end with a secret's start (MIN_OVERLAP bytes or more)?
 * A shorter piece only when it is the whole secret: `role "u"` stays when
 * the password holds a 'u'. */
static int quoted_secret(const secrets_t *sec, const char *q, size_t m) {
  size_t j, l;
  for (j = 0; j < sec->count; j++) {
    const char *p = sec->p[j];
    size_t n = sec->n[j];
    if ((m >= MIN_OVERLAP || m == n) && holds(p, n, q, m))
      return 1;
    for (l = MIN_OVERLAP; l <= n && l <= m; l++)
      if (memcmp(p + n - l, q, l) == 0 || memcmp(q + m - l, p, l) == 0)
        return 1;
  }
  return 0;
}

/* A secret, or a quoted piece of one, at s[i]: returns where it ends (0:
 * none); *quoted tells it was a quoted piece ("..." or an unterminated
 * "...), s[i] being its opening quote. A piece that is no secret sets
 * *closing to its closing quote, which opens nothing. */
static size_t secret_at(const secrets_t *sec, const char *s, size_t len,
                        size_t i, int *quoted, size_t *closing) {
  size_t j, best = 0;
  if (s[i] == '"' && i != *closing) {
    size_t e = i + 1;
    while (e < len && s[e] != '"' && s[e] != '\n')
      e++;
    if (e > i + 1 && quoted_secret(sec, s + i + 1, e - i - 1)) {
      *quoted = 1;
      return e < len && s[e] == '"' ? e + 1 : e;
    }
    *closing = e;
  }
  for (j = 0; j < sec->count; j++)
    if (sec->n[j] >= MIN_OVERLAP && sec->n[j] > best && len - i >= sec->n[j] &&
        memcmp(s + i, sec->p[j], sec->n[j]) == 0)
      best = sec->n[j];
  *quoted = 0;
  return best ? i + best : 0;
}

static size_t scrub(const char *s, size_t len, const secrets_t *sec, char *out,
                    size_t cap) {
  sink_t o = {out, cap, 0};
  size_t i = 0, run = 0, k, r, closing = (size_t)-1;
  int quoted;
  /* Text between rewrites is copied in runs (s[run..i) is pending). */
  while (i < len) {
    unsigned char c = (unsigned char)s[i];
    if (sec != NULL &&
        (r = secret_at(sec, s, len, i, &quoted, &closing)) != 0) {
      put(&o, s + run, i - run);
      if (quoted)
        put(&o, "\"***\"", s[r - 1] == '"' ? 5 : 4);
      else
        put(&o, "***", 3);
      i = run = r;
      continue;
    }
    if (!(CLASS[c] & C_TRIG)) {
      i++;
      continue;
    }
    if (c == '/') {
      if ((r = home_at(s, len, i)) != 0) {
        put(&o, s + run, i - run);
        put(&o, "~", 1);
        i += r;
        run = i;
        continue;
      }
    } else if (c == ':') {
      if (STARTS(s, len, i, "://")) {
        put(&o, s + run, i - run);
        run = i;
        if ((r = mask_userinfo(&o, s, len, i)) != 0) {
          i = run = r;
          continue;
        }
      }
    } else if (i == 0 || !is_word_char((unsigned char)s[i - 1])) {
      for (k = i + 1; k < len && (CLASS[(unsigned char)s[k]] & C_WORD); k++)
        ;
      if (candidate(s, len, i, k)) {
        put(&o, s + run, i - run);
        run = i;
        if ((r = mask_after_word(&o, s, len, i, k)) != 0) {
          i = run = r;
          continue;
        }
      }
      /* With secrets to find, every position is looked at. */
      i = sec != NULL ? i + 1 : k;
      continue;
    }
    i++;
  }
  put(&o, s + run, len - run);
  return o.n;
}

size_t mnemo_scrub(const char *s, size_t len, char *out, size_t cap) {
  return scrub(s, len, NULL, out, cap);
}

size_t mnemo_scrub_dsn(const char *s, size_t len, const char *dsn,
                       size_t dsn_len, char *out, size_t cap) {
  secrets_t sec;
  find_secrets(dsn, dsn_len, &sec);
  return scrub(s, len, sec.count > 0 ? &sec : NULL, out, cap);
}

/* ---- growable buffer (for JSON) ---- */

typedef struct buf {
  char *p;
  size_t n, cap;
  int oom;
} buf_t;

static int reserve(buf_t *b, size_t more) {
  size_t want;
  char *p;
  if (b->oom)
    return 0;
  if (b->cap - b->n >= more)
    return 1;
  want = b->cap ? b->cap : 256;
  while (want - b->n < more)
    want *= 2;
  p = realloc(b->p, want);
  if (p == NULL) {
    b->oom = 1;
    return 0;
  }
  b->p = p;
  b->cap = want;
  return 1;
}

static void add(buf_t *b, const char *p, size_t n) {
  if (n > 0 && reserve(b, n)) {
    memcpy(b->p + b->n, p, n);
    b->n += n;
  }
}

static void adds(buf_t *b, const char *s) {
  add(b, s, strlen(s));
}

/* Escapes a run of valid UTF-8 (NUL included: jsonb refuses \u0000). */
static void json_valid_run(buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t i, start = 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[8];
    const char *rep = NULL;
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    add(b, s + start, i - start);
    start = i + 1;
    switch (c) {
    case '"':
      rep = "\\\"";
      break;
    case '\\':
      rep = "\\\\";
      break;
    case '\n':
      rep = "\\n";
      break;
    case '\r':
      rep = "\\r";
      break;
    case '\t':
      rep = "\\t";
      break;
    case 0:
      rep = "\\ufffd";
      break;
    default:
      memcpy(esc, "\\u00", 4);
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 15];
      esc[6] = '\0';
      rep = esc;
    }
    adds(b, rep);
  }
  add(b, s + start, n - start);
}

/* A JSON string; bytes that are not UTF-8 become U+FFFD, one each. */
static void json_string(buf_t *b, const char *s, size_t n) {
  size_t i = 0, bad;
  add(b, "\"", 1);
  while (i < n) {
    if (mnemo_utf8_valid(s + i, n - i, &bad)) {
      json_valid_run(b, s + i, n - i);
      break;
    }
    json_valid_run(b, s + i, bad);
    adds(b, "\\ufffd");
    i += bad + 1;
  }
  add(b, "\"", 1);
}

static void json_number(buf_t *b, double d) {
  char tmp[40];
  if (!isfinite(d)) {
    adds(b, "null");
    return;
  }
  /* The shortest of %.15g / %.17g that reads back as d. */
  snprintf(tmp, sizeof(tmp), "%.15g", d);
  if (strtod(tmp, NULL) != d)
    snprintf(tmp, sizeof(tmp), "%.17g", d);
  adds(b, tmp);
}

/* Microseconds since the epoch as seconds with 6 decimals (exact). */
static void json_time(buf_t *b, int64_t us) {
  char tmp[40];
  int64_t sec = us / 1000000, frac = us % 1000000;
  if (frac < 0) {
    frac += 1000000;
    sec -= 1;
  }
  snprintf(tmp, sizeof(tmp), "%lld.%06lld", (long long)sec, (long long)frac);
  adds(b, tmp);
}

/* ---- entries ---- */

enum {
  F_SERVICE,
  F_OPERATION,
  F_ERROR_TYPE,
  F_MESSAGE,
  F_REPOSITORY, /* the fields up to here are the identity */
  F_CORRELATION,
  F_TRACEBACK,
  F_CONTEXT,
  F_COUNT
};
#define KEY_FIELDS (F_REPOSITORY + 1)

/* An entry's correlation ids beyond the first event's (its F_CORRELATION
 * field): each NUL-terminated in data, with its length and fingerprint
 * (compared before the bytes: the ids of one process share a prefix). */
#define CORR_MAX MNEMO_ERROR_MAX_CORRELATION_IDS
#define CORR_DATA_MAX (CORR_MAX * (MNEMO_ERROR_MAX_NAME + 1))
_Static_assert(CORR_DATA_MAX <= UINT16_MAX, "correlation sample offsets");
typedef struct corr_ids {
  uint16_t n, used, cap; /* ids held; bytes of data used, allocated */
  uint16_t off[CORR_MAX], len[CORR_MAX];
  uint64_t fp[CORR_MAX];
  char data[];
} corr_ids_t;

struct mnemo_error_entry {
  mnemo_error_entry_t *hnext;   /* bucket chain */
  mnemo_error_entry_t **hpprev; /* the pointer that points at this entry */
  mnemo_error_entry_t *newer;   /* queue (or batch) order */
  mnemo_error_entry_t *older;
  uint64_t hash;
  int64_t window_start_us, first_us, last_us;
  uint64_t count;
  size_t charge;
  corr_ids_t *ids;      /* NULL until a second distinct id */
  uint64_t ids_omitted; /* occurrences whose id did not fit */
  unsigned char severity, category;
  unsigned present; /* bit per field */
  uint32_t off[F_COUNT], len[F_COUNT];
  char data[]; /* each field NUL-terminated */
};

/* The identity of an event or entry. */
typedef struct key {
  uint64_t hash;
  int64_t window_start_us;
  unsigned char severity, category;
  unsigned present;
  mnemo_str_t f[KEY_FIELDS];
} ekey_t;

/* Keyed with a random seed (mnemo_siphash13): messages may come from
 * outside, and chosen collisions would turn every record into a walk along
 * one long chain. */

/* The identity's hash: the message hashed where it lies, then everything
 * else (lengths first, so that field boundaries cannot shift) and the
 * message's hash laid out in one small buffer, hashed in one call. */
#define KEY_BUF                                                                \
  (32 + 8 * KEY_FIELDS + 3 * MNEMO_ERROR_MAX_NAME + MNEMO_ERROR_MAX_CTX_VALUE)

static void key_hash(ekey_t *k, uint64_t mh, const uint64_t seed[2]) {
  unsigned char buf[KEY_BUF];
  uint64_t lens[KEY_FIELDS];
  size_t n = 0;
  int i;
  buf[n++] = k->severity;
  buf[n++] = k->category;
  buf[n++] = (unsigned char)k->present;
  memcpy(buf + n, &k->window_start_us, sizeof(k->window_start_us));
  n += sizeof(k->window_start_us);
  memcpy(buf + n, &mh, sizeof(mh));
  n += sizeof(mh);
  for (i = 0; i < KEY_FIELDS; i++)
    lens[i] = k->f[i].n;
  memcpy(buf + n, lens, sizeof(lens));
  n += sizeof(lens);
  for (i = 0; i < KEY_FIELDS; i++)
    if (i != F_MESSAGE && k->f[i].n > 0) {
      memcpy(buf + n, k->f[i].s, k->f[i].n);
      n += k->f[i].n;
    }
  k->hash = mnemo_siphash13(buf, n, seed);
}

static mnemo_str_t field(const mnemo_error_entry_t *e, int f) {
  mnemo_str_t s = {NULL, 0};
  if (e->present & (1u << f)) {
    s.s = e->data + e->off[f];
    s.n = e->len[f];
  }
  return s;
}

static void entry_key(const mnemo_error_entry_t *e, ekey_t *k) {
  int i;
  k->hash = e->hash;
  k->window_start_us = e->window_start_us;
  k->severity = e->severity;
  k->category = e->category;
  k->present = e->present & ((1u << KEY_FIELDS) - 1);
  for (i = 0; i < KEY_FIELDS; i++)
    k->f[i] = field(e, i);
}

static int same_key(const mnemo_error_entry_t *e, const ekey_t *k) {
  int i;
  if (e->hash != k->hash || e->window_start_us != k->window_start_us ||
      e->severity != k->severity || e->category != k->category ||
      (e->present & ((1u << KEY_FIELDS) - 1)) != k->present)
    return 0;
  for (i = 0; i < KEY_FIELDS; i++)
    if (e->len[i] != k->f[i].n ||
        (k->f[i].n > 0 && memcmp(e->data + e->off[i], k->f[i].s, k->f[i].n)))
      return 0;
  return 1;
}

/* ---- correlation ids ---- */

static void entry_free(mnemo_error_entry_t *e) {
  free(e->ids);
  free(e);
}

static size_t corr_charge(const corr_ids_t *c) {
  return c != NULL ? sizeof(*c) + c->cap + 16 : 0;
}

/* Cheap and good enough to skip most byte comparisons: the first and the
 * last 8 bytes (ids of one process differ at the end, UUIDs anywhere). */
static uint64_t corr_fp(const char *s, size_t n) {
  uint64_t a = 0, b = 0;
  if (n >= 8) {
    memcpy(&a, s, 8);
    memcpy(&b, s + n - 8, 8);
  } else if (n > 0) {
    memcpy(&a, s, n);
  }
  return (a ^ (b * 0x9E3779B97F4A7C15ull)) + n;
}

static int has_first_id(const mnemo_error_entry_t *e) {
  return (e->present & (1u << F_CORRELATION)) != 0;
}

static size_t corr_count(const mnemo_error_entry_t *e) {
  return (size_t)has_first_id(e) + (e->ids != NULL ? e->ids->n : 0);
}

static int corr_has(const mnemo_error_entry_t *e, const char *s, size_t n,
                    uint64_t fp) {
  const corr_ids_t *c = e->ids;
  unsigned i;
  if (has_first_id(e) && e->len[F_CORRELATION] == n &&
      memcmp(e->data + e->off[F_CORRELATION], s, n) == 0)
    return 1;
  if (c != NULL)
    for (i = 0; i < c->n; i++)
      if (c->fp[i] == fp && c->len[i] == n &&
          memcmp(c->data + c->off[i], s, n) == 0)
        return 1;
  return 0;
}

/* Adds id (already cut, not empty) to e's sample unless it is there;
 * `occurrences` is what to count as omitted when it does not fit. The
 * sample's growth is charged to e, and to the queue's bytes when e is
 * queued (the caller applies the bounds). */
static void corr_note(mnemo_error_tracker_t *t, mnemo_error_entry_t *e,
                      const char *s, size_t n, uint64_t occurrences,
                      int queued) {
  corr_ids_t *c = e->ids;
  uint64_t fp = corr_fp(s, n);
  size_t need;
  if (corr_has(e, s, n, fp))
    return;
  if (corr_count(e) >= CORR_MAX) {
    e->ids_omitted += occurrences;
    return;
  }
  need = (c != NULL ? c->used : 0) + n + 1;
  if (c == NULL || need > c->cap) {
    size_t cap = c != NULL ? c->cap : 64, before = corr_charge(c), grown;
    corr_ids_t *nc;
    while (cap < need)
      cap *= 2;
    if (cap > CORR_DATA_MAX)
      cap = CORR_DATA_MAX; /* need never is: CORR_MAX ids of at most a name */
    nc = realloc(c, sizeof(*nc) + cap);
    if (nc == NULL) {
      e->ids_omitted += occurrences;
      return;
    }
    if (c == NULL)
      nc->n = nc->used = 0;
    nc->cap = (uint16_t)cap;
    e->ids = c = nc;
    grown = corr_charge(c) - before;
    e->charge += grown;
    if (queued)
      t->stats.bytes += grown;
  }
  c->off[c->n] = c->used;
  c->len[c->n] = (uint16_t)n;
  c->fp[c->n] = fp;
  memcpy(c->data + c->used, s, n);
  c->data[c->used + n] = '\0';
  c->used = (uint16_t)(c->used + n + 1);
  c->n++;
}

const char *mnemo_error_correlation_id(const mnemo_error_entry_t *e, size_t i,
                                       size_t *len) {
  if (has_first_id(e)) {
    if (i == 0) {
      *len = e->len[F_CORRELATION];
      return e->data + e->off[F_CORRELATION];
    }
    i--;
  }
  if (e->ids == NULL || i >= e->ids->n) {
    *len = 0;
    return NULL;
  }
  *len = e->ids->len[i];
  return e->ids->data + e->ids->off[i];
}

/* e's ids into `into` (a requeued entry merged with one recorded since):
 * each id that does not fit counts one omitted occurrence (at least one
 * had it). */
static void corr_merge(mnemo_error_tracker_t *t, mnemo_error_entry_t *into,
                       const mnemo_error_entry_t *e) {
  size_t i, n = corr_count(e), len;
  for (i = 0; i < n; i++) {
    const char *s = mnemo_error_correlation_id(e, i, &len);
    corr_note(t, into, s, len, 1, 1);
  }
  into->ids_omitted += e->ids_omitted;
}

/* ---- the table and the queue ---- */

#define MIN_BUCKETS 64

static mnemo_error_entry_t **bucket(mnemo_error_tracker_t *t, uint64_t hash) {
  return &t->buckets[hash & (t->nbuckets - 1)];
}

static void chain_insert(mnemo_error_entry_t **slot, mnemo_error_entry_t *e) {
  e->hnext = *slot;
  if (*slot != NULL)
    (*slot)->hpprev = &e->hnext;
  *slot = e;
  e->hpprev = slot;
}

static void chain_remove(mnemo_error_entry_t *e) {
  *e->hpprev = e->hnext;
  if (e->hnext != NULL)
    e->hnext->hpprev = e->hpprev;
  e->hnext = NULL;
  e->hpprev = NULL;
}

static mnemo_error_entry_t *find(mnemo_error_tracker_t *t, const ekey_t *k) {
  mnemo_error_entry_t *e;
  for (e = *bucket(t, k->hash); e != NULL; e = e->hnext)
    if (same_key(e, k))
      return e;
  return NULL;
}

/* Doubles the table (load factor 1). On allocation failure it stays: the
 * chains only get longer. */
static void grow(mnemo_error_tracker_t *t) {
  size_t n = t->nbuckets * 2;
  mnemo_error_entry_t **b = calloc(n, sizeof(*b));
  mnemo_error_entry_t *e;
  if (b == NULL)
    return;
  free(t->buckets);
  t->buckets = b;
  t->nbuckets = n;
  for (e = t->oldest; e != NULL; e = e->newer)
    chain_insert(bucket(t, e->hash), e);
}

static void list_unlink(mnemo_error_tracker_t *t, mnemo_error_entry_t *e) {
  if (e->older != NULL)
    e->older->newer = e->newer;
  else
    t->oldest = e->newer;
  if (e->newer != NULL)
    e->newer->older = e->older;
  else
    t->newest = e->older;
  e->newer = e->older = NULL;
}

static void push_newest(mnemo_error_tracker_t *t, mnemo_error_entry_t *e) {
  e->newer = NULL;
  e->older = t->newest;
  if (t->newest != NULL)
    t->newest->newer = e;
  else
    t->oldest = e;
  t->newest = e;
}

static void push_oldest(mnemo_error_tracker_t *t, mnemo_error_entry_t *e) {
  e->older = NULL;
  e->newer = t->oldest;
  if (t->oldest != NULL)
    t->oldest->older = e;
  else
    t->newest = e;
  t->oldest = e;
}

/* Adds e (not in the queue) to the table and the accounting. */
static void enqueue(mnemo_error_tracker_t *t, mnemo_error_entry_t *e,
                    int as_oldest) {
  chain_insert(bucket(t, e->hash), e);
  if (as_oldest)
    push_oldest(t, e);
  else
    push_newest(t, e);
  t->stats.entries++;
  t->stats.bytes += e->charge;
  if (t->stats.entries > t->nbuckets)
    grow(t);
}

/* Takes e out of the table and the queue (it stays allocated). */
static void dequeue(mnemo_error_tracker_t *t, mnemo_error_entry_t *e) {
  chain_remove(e);
  list_unlink(t, e);
  t->stats.entries--;
  t->stats.bytes -= e->charge;
}

static void drop_oldest(mnemo_error_tracker_t *t) {
  mnemo_error_entry_t *e = t->oldest;
  dequeue(t, e);
  t->stats.dropped += e->count;
  t->stats.pending -= e->count;
  entry_free(e);
}

/* Drops the oldest entries until `extra_entries` more entries of
 * `extra_bytes` in all fit in the bounds. */
static void make_room(mnemo_error_tracker_t *t, size_t extra_entries,
                      size_t extra_bytes) {
  while (t->oldest != NULL &&
         (t->stats.entries + extra_entries > t->config.capacity ||
          t->stats.bytes + extra_bytes > t->config.max_bytes))
    drop_oldest(t);
}

static int config_valid(const mnemo_error_config_t *c) {
  return c->capacity >= 1 && c->max_bytes >= MNEMO_ERROR_MIN_BYTES &&
         c->window_us > 0;
}

void mnemo_error_config_default(mnemo_error_config_t *c) {
  memset(c, 0, sizeof(*c));
  c->capacity = 10000;
  c->max_bytes = 16u << 20;
  c->window_us = 60 * 1000000LL;
}

int mnemo_error_tracker_init(mnemo_error_tracker_t *t,
                             const mnemo_error_config_t *config) {
  memset(t, 0, sizeof(*t));
  if (!config_valid(config))
    return MNEMO_EINVAL;
  t->config = *config;
  t->nbuckets = MIN_BUCKETS;
  t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
  if (t->buckets == NULL)
    return MNEMO_ENOMEM;
  return 0;
}

void mnemo_error_tracker_free(mnemo_error_tracker_t *t) {
  mnemo_error_entry_t *e = t->oldest, *next;
  while (e != NULL) {
    next = e->newer;
    entry_free(e);
    e = next;
  }
  free(t->buckets);
  memset(t, 0, sizeof(*t));
}

void mnemo_error_tracker_clear(mnemo_error_tracker_t *t) {
  mnemo_error_entry_t *e = t->oldest, *next;
  uint64_t queued = 0, out;
  while (e != NULL) {
    next = e->newer;
    queued += e->count;
    entry_free(e);
    e = next;
  }
  out = t->stats.pending - queued;
  t->oldest = t->newest = NULL;
  memset(t->buckets, 0, t->nbuckets * sizeof(*t->buckets));
  memset(&t->stats, 0, sizeof(t->stats));
  t->stats.pending = out;
}

int mnemo_error_tracker_configure(mnemo_error_tracker_t *t,
                                  const mnemo_error_config_t *config) {
  if (!config_valid(config))
    return MNEMO_EINVAL;
  t->config.capacity = config->capacity;
  t->config.max_bytes = config->max_bytes;
  t->config.window_us = config->window_us;
  make_room(t, 0, 0);
  return 0;
}

/* ---- recording ---- */

/* A cut of s[0..n) to at most max bytes that does not split a UTF-8
 * character (looks back at most 3 bytes: further back it is not UTF-8
 * anyway). s[max] must be readable when n > max. */
static size_t utf8_cut(const char *s, size_t n, size_t max) {
  size_t c = max, back = 0;
  if (n <= max)
    return n;
  while (c > 0 && back < 3 && ((unsigned char)s[c] & 0xC0) == 0x80) {
    c--;
    back++;
  }
  return ((unsigned char)s[c] & 0xC0) == 0x80 ? max : c;
}

/* Scrubs src into buf (cap + 4 bytes) and cuts it to at most cap bytes. */
static size_t scrub_cut(mnemo_str_t src, char *buf, size_t cap) {
  size_t n = mnemo_scrub(src.s, src.n, buf, cap + 4);
  return utf8_cut(buf, n < cap + 4 ? n : cap + 4, cap);
}

static mnemo_str_t name_cut(mnemo_str_t s) {
  if (s.s != NULL && s.n > MNEMO_ERROR_MAX_NAME)
    s.n = utf8_cut(s.s, s.n, MNEMO_ERROR_MAX_NAME);
  return s;
}

static int64_t floor_to(int64_t v, int64_t step) {
  int64_t r = v % step;
  return r < 0 ? v - r - step : v - r;
}

/* The context as a JSON object; string values scrubbed and cut. Fields
 * that would take it past MNEMO_ERROR_MAX_CONTEXT are left out, and
 * "_truncated": true says so. */
static void context_json(buf_t *b, const mnemo_error_ctx_t *ctx, size_t n) {
  char value[MNEMO_ERROR_MAX_CTX_VALUE + 4];
  size_t i, mark;
  int truncated = 0;
  add(b, "{", 1);
  for (i = 0; i < n; i++) {
    const mnemo_error_ctx_t *c = &ctx[i];
    if (c->key.s == NULL)
      continue;
    mark = b->n;
    if (mark > 1)
      add(b, ",", 1);
    json_string(b, c->key.s, name_cut(c->key).n);
    add(b, ":", 1);
    switch (c->kind) {
    case MNEMO_CTX_STRING: {
      size_t vn =
          c->str.s ? scrub_cut(c->str, value, MNEMO_ERROR_MAX_CTX_VALUE) : 0;
      json_string(b, value, vn);
      break;
    }
    case MNEMO_CTX_NUMBER:
      json_number(b, c->number);
      break;
    default:
      adds(b, c->boolean ? "true" : "false");
    }
    /* Room is kept for the closing brace and the truncation mark. */
    if (b->n + 20 > MNEMO_ERROR_MAX_CONTEXT) {
      b->n = mark;
      truncated = 1;
    }
  }
  if (truncated)
    adds(b, b->n > 1 ? ",\"_truncated\":true" : "\"_truncated\":true");
  add(b, "}", 1);
}

#define STR_EQ(str, x)                                                         \
  ((str).s != NULL && (str).n == sizeof(x) - 1 &&                              \
   memcmp((str).s, x, sizeof(x) - 1) == 0)

#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

static int add_entry(mnemo_error_tracker_t *t, const mnemo_error_event_t *ev,
                     mnemo_str_t *fields, const ekey_t *k, int64_t now_us);

/* The scrubbed, cut message (in buf, or in the memo) and its hash. */
static mnemo_str_t scrub_message(mnemo_error_tracker_t *t, mnemo_str_t raw,
                                 char *buf, uint64_t *hash) {
  mnemo_str_t out;
  mnemo_error_memo_t *m;
  unsigned i;
  if (raw.n > 0 && raw.n <= MNEMO_ERROR_MEMO_RAW) {
    for (i = 0; i < MNEMO_ERROR_MEMO; i++) {
      m = &t->memo[i];
      if (m->raw_n == raw.n && memcmp(m->raw, raw.s, raw.n) == 0) {
        out.s = m->out;
        out.n = m->out_n;
        *hash = m->hash;
        return out;
      }
    }
  }
  out.s = buf;
  out.n = scrub_cut(raw, buf, MNEMO_ERROR_MAX_MESSAGE);
  *hash = mnemo_siphash13(out.s, out.n, t->config.seed);
  if (raw.n > 0 && raw.n <= MNEMO_ERROR_MEMO_RAW &&
      out.n <= MNEMO_ERROR_MEMO_RAW) {
    m = &t->memo[t->memo_next];
    t->memo_next = (t->memo_next + 1) % MNEMO_ERROR_MEMO;
    m->raw_n = (uint32_t)raw.n;
    m->out_n = (uint32_t)out.n;
    m->hash = *hash;
    memcpy(m->raw, raw.s, raw.n);
    if (out.n > 0)
      memcpy(m->out, out.s, out.n);
  }
  return out;
}

int mnemo_error_record(mnemo_error_tracker_t *t, const mnemo_error_event_t *ev,
                       int64_t now_us) {
  char message[MNEMO_ERROR_MAX_MESSAGE + 4];
  char repository[MNEMO_ERROR_MAX_CTX_VALUE + 4];
  mnemo_str_t fields[F_COUNT];
  mnemo_error_entry_t *e;
  ekey_t k;
  uint64_t mh;
  size_t i;

  if ((unsigned)ev->severity >= MNEMO_SEV_COUNT ||
      (unsigned)ev->category >= MNEMO_CAT_COUNT || ev->service.s == NULL ||
      ev->error_type.s == NULL || ev->message.s == NULL ||
      (ev->ncontext > 0 && ev->context == NULL))
    return MNEMO_EINVAL;

  /* The identity first: everything an aggregated event needs. */
  memset(fields, 0, sizeof(fields));
  fields[F_SERVICE] = name_cut(ev->service);
  fields[F_OPERATION] = name_cut(ev->operation);
  fields[F_ERROR_TYPE] = name_cut(ev->error_type);
  fields[F_MESSAGE] = scrub_message(t, ev->message, message, &mh);
  if (ev->context_fn != NULL) {
    if (ev->repository.s != NULL) {
      fields[F_REPOSITORY].s = repository;
      fields[F_REPOSITORY].n =
          scrub_cut(ev->repository, repository, MNEMO_ERROR_MAX_CTX_VALUE);
    }
  } else {
    for (i = 0; i < ev->ncontext; i++) {
      const mnemo_error_ctx_t *c = &ev->context[i];
      if (c->kind == MNEMO_CTX_STRING && c->str.s != NULL &&
          STR_EQ(c->key, "repository")) {
        fields[F_REPOSITORY].s = repository;
        fields[F_REPOSITORY].n =
            scrub_cut(c->str, repository, MNEMO_ERROR_MAX_CTX_VALUE);
        break;
      }
    }
  }
  k.severity = (unsigned char)ev->severity;
  k.category = (unsigned char)ev->category;
  k.window_start_us = floor_to(now_us, t->config.window_us);
  k.present = 0;
  for (i = 0; i < KEY_FIELDS; i++) {
    k.f[i] = fields[i];
    if (fields[i].s != NULL)
      k.present |= 1u << i;
  }
  key_hash(&k, mh, t->config.seed);

  e = find(t, &k);
  if (e != NULL) {
    size_t charge = e->charge;
    e->count++;
    if (now_us > e->last_us)
      e->last_us = now_us;
    if (now_us < e->first_us)
      e->first_us = now_us;
    /* Seen again: it is among the newest now (dropped last). */
    if (t->newest != e) {
      list_unlink(t, e);
      push_newest(t, e);
    }
    t->stats.recorded++;
    t->stats.aggregated++;
    t->stats.pending++;
    if (ev->correlation_id.s != NULL && ev->correlation_id.n > 0) {
      mnemo_str_t id = name_cut(ev->correlation_id);
      corr_note(t, e, id.s, id.n, 1, 1);
      /* A grown sample: the oldest others go first (e is the newest, and
       * far below any max_bytes alone). e must not be used after this. */
      if (e->charge != charge)
        make_room(t, 0, 0);
    }
    return 0;
  }
  return add_entry(t, ev, fields, &k, now_us);
}

/* A new entry: the rest of the fields, then one allocation. Apart (and
 * not inlined) so that the common, aggregated path keeps a small stack
 * frame: the traceback's buffer alone is 8 KiB. */
static NOINLINE int add_entry(mnemo_error_tracker_t *t,
                              const mnemo_error_event_t *ev,
                              mnemo_str_t *fields, const ekey_t *k,
                              int64_t now_us) {
  char traceback[MNEMO_ERROR_MAX_TRACEBACK + 4];
  mnemo_error_entry_t *e;
  buf_t ctx = {NULL, 0, 0, 0};
  size_t i, size, charge;
  char *p;

  if (ev->correlation_id.n > 0)
    fields[F_CORRELATION] = name_cut(ev->correlation_id);
  if (ev->traceback.s != NULL) {
    fields[F_TRACEBACK].s = traceback;
    fields[F_TRACEBACK].n =
        scrub_cut(ev->traceback, traceback, MNEMO_ERROR_MAX_TRACEBACK);
  }
  if (ev->context_fn != NULL) {
    /* Before anything changes: the callback may not return (a Lua error
     * unwinds through here). */
    mnemo_error_ctx_t gathered[MNEMO_ERROR_MAX_CTX_FIELDS];
    size_t n =
        ev->context_fn(ev->context_ud, gathered, MNEMO_ERROR_MAX_CTX_FIELDS);
    context_json(&ctx, gathered,
                 n < MNEMO_ERROR_MAX_CTX_FIELDS ? n
                                                : MNEMO_ERROR_MAX_CTX_FIELDS);
  } else {
    context_json(&ctx, ev->context, ev->ncontext);
  }
  if (ctx.oom) {
    free(ctx.p);
    t->stats.dropped++;
    return MNEMO_ENOMEM;
  }
  fields[F_CONTEXT].s = ctx.p;
  fields[F_CONTEXT].n = ctx.n;

  size = 0;
  for (i = 0; i < F_COUNT; i++)
    size += fields[i].n + 1;
  e = malloc(sizeof(*e) + size);
  if (e == NULL) {
    free(ctx.p);
    t->stats.dropped++;
    return MNEMO_ENOMEM;
  }
  memset(e, 0, sizeof(*e));
  p = e->data;
  for (i = 0; i < F_COUNT; i++) {
    e->off[i] = (uint32_t)(p - e->data);
    e->len[i] = (uint32_t)fields[i].n;
    if (fields[i].s != NULL) {
      e->present |= 1u << i;
      if (fields[i].n > 0)
        memcpy(p, fields[i].s, fields[i].n);
    }
    p[fields[i].n] = '\0';
    p += fields[i].n + 1;
  }
  free(ctx.p);
  e->hash = k->hash;
  e->window_start_us = k->window_start_us;
  e->first_us = e->last_us = now_us;
  e->count = 1;
  e->severity = k->severity;
  e->category = k->category;
  /* Header, data, a bucket pointer's share and the allocator's own. */
  charge = sizeof(*e) + size + 2 * sizeof(void *) + 16;
  e->charge = charge;

  make_room(t, 1, charge);
  enqueue(t, e, 0);
  t->stats.recorded++;
  t->stats.pending++;
  return 0;
}

/* ---- batches ---- */

size_t mnemo_error_take(mnemo_error_tracker_t *t, mnemo_error_batch_t *batch,
                        size_t max) {
  mnemo_error_entry_t *last = NULL;
  size_t n = 0;
  memset(batch, 0, sizeof(*batch));
  while (n < max && t->oldest != NULL) {
    mnemo_error_entry_t *e = t->oldest;
    dequeue(t, e);
    e->older = last;
    if (last != NULL)
      last->newer = e;
    else
      batch->first = e;
    last = e;
    batch->events += e->count;
    n++;
  }
  batch->last = last;
  batch->entries = n;
  return n;
}

void mnemo_error_batch_free(mnemo_error_batch_t *batch) {
  mnemo_error_entry_t *e = batch->first, *next;
  while (e != NULL) {
    next = e->newer;
    entry_free(e);
    e = next;
  }
  memset(batch, 0, sizeof(*batch));
}

void mnemo_error_batch_commit(mnemo_error_tracker_t *t,
                              mnemo_error_batch_t *batch) {
  t->stats.flushed += batch->events;
  t->stats.pending -= batch->events;
  mnemo_error_batch_free(batch);
}

void mnemo_error_batch_drop(mnemo_error_tracker_t *t,
                            mnemo_error_batch_t *batch) {
  t->stats.dropped += batch->events;
  t->stats.pending -= batch->events;
  mnemo_error_batch_free(batch);
}

void mnemo_error_batch_requeue(mnemo_error_tracker_t *t,
                               mnemo_error_batch_t *batch) {
  mnemo_error_entry_t *e = batch->last, *prev;
  t->stats.flush_failures++;
  /* Newest first, each pushed at the oldest end: the batch keeps its
   * order, ahead of everything recorded since it was taken. */
  while (e != NULL) {
    mnemo_error_entry_t *same;
    ekey_t k;
    prev = e->older;
    e->newer = e->older = NULL;
    entry_key(e, &k);
    same = find(t, &k);
    if (same != NULL) {
      /* Recorded again while the batch was out: one entry, one row. */
      same->count += e->count;
      if (e->first_us < same->first_us)
        same->first_us = e->first_us;
      if (e->last_us > same->last_us)
        same->last_us = e->last_us;
      corr_merge(t, same, e);
      entry_free(e);
    } else {
      enqueue(t, e, 1);
    }
    e = prev;
  }
  memset(batch, 0, sizeof(*batch));
  make_room(t, 0, 0);
}

static void json_field(buf_t *b, const mnemo_error_entry_t *e, int f,
                       const char *name) {
  mnemo_str_t s = field(e, f);
  add(b, ",\"", 2);
  adds(b, name);
  add(b, "\":", 2);
  if (s.s == NULL)
    adds(b, "null");
  else
    json_string(b, s.s, s.n);
}

/* correlation_id, correlation_ids, correlation_ids_omitted */
static void json_correlation(buf_t *b, const mnemo_error_entry_t *e) {
  size_t i, n = corr_count(e), len;
  char tmp[32];
  const char *s = mnemo_error_correlation_id(e, 0, &len);
  adds(b, ",\"correlation_id\":");
  if (s != NULL)
    json_string(b, s, len);
  else
    adds(b, "null");
  adds(b, ",\"correlation_ids\":[");
  for (i = 0; i < n; i++) {
    s = mnemo_error_correlation_id(e, i, &len);
    if (i > 0)
      add(b, ",", 1);
    json_string(b, s, len);
  }
  snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)e->ids_omitted);
  adds(b, "],\"correlation_ids_omitted\":");
  adds(b, tmp);
}

int mnemo_error_batch_json(const mnemo_error_batch_t *batch, char **json,
                           size_t *len) {
  buf_t b = {NULL, 0, 0, 0};
  const mnemo_error_entry_t *e;
  char tmp[32];
  add(&b, "[", 1);
  for (e = batch->first; e != NULL; e = e->newer) {
    if (e != batch->first)
      add(&b, ",", 1);
    adds(&b, "{\"severity\":\"");
    adds(&b, SEVERITY_NAMES[e->severity]);
    adds(&b, "\",\"category\":\"");
    adds(&b, CATEGORY_NAMES[e->category]);
    add(&b, "\"", 1);
    json_field(&b, e, F_SERVICE, "service");
    json_field(&b, e, F_OPERATION, "operation");
    json_field(&b, e, F_ERROR_TYPE, "error_type");
    json_field(&b, e, F_MESSAGE, "message");
    json_correlation(&b, e);
    json_field(&b, e, F_TRACEBACK, "traceback");
    /* Built as JSON when recorded. */
    adds(&b, ",\"context\":");
    add(&b, e->data + e->off[F_CONTEXT], e->len[F_CONTEXT]);
    snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)e->count);
    adds(&b, ",\"occurrences\":");
    adds(&b, tmp);
    adds(&b, ",\"first_seen\":");
    json_time(&b, e->first_us);
    adds(&b, ",\"last_seen\":");
    json_time(&b, e->last_us);
    adds(&b, ",\"window_start\":");
    json_time(&b, e->window_start_us);
    add(&b, "}", 1);
  }
  add(&b, "]", 1);
  add(&b, "", 1); /* room for a NUL */
  if (b.oom) {
    free(b.p);
    return MNEMO_ENOMEM;
  }
  b.p[b.n - 1] = '\0';
  *json = b.p;
  *len = b.n - 1;
  return 0;
}

/* ---- views ---- */

const mnemo_error_entry_t *mnemo_error_oldest(const mnemo_error_tracker_t *t) {
  return t->oldest;
}

const mnemo_error_entry_t *
mnemo_error_batch_first(const mnemo_error_batch_t *b) {
  return b->first;
}

const mnemo_error_entry_t *mnemo_error_next(const mnemo_error_entry_t *e) {
  return e->newer;
}

static const char *view_str(const mnemo_error_entry_t *e, int f) {
  return (e->present & (1u << f)) ? e->data + e->off[f] : NULL;
}

void mnemo_error_view(const mnemo_error_entry_t *e, mnemo_error_view_t *v) {
  size_t len;
  v->severity = (mnemo_severity_t)e->severity;
  v->category = (mnemo_error_category_t)e->category;
  v->service = view_str(e, F_SERVICE);
  v->operation = view_str(e, F_OPERATION);
  v->error_type = view_str(e, F_ERROR_TYPE);
  v->message = view_str(e, F_MESSAGE);
  v->repository = view_str(e, F_REPOSITORY);
  v->correlation_id = mnemo_error_correlation_id(e, 0, &len);
  v->traceback = view_str(e, F_TRACEBACK);
  v->context_json = view_str(e, F_CONTEXT);
  v->count = e->count;
  v->first_us = e->first_us;
  v->last_us = e->last_us;
  v->window_start_us = e->window_start_us;
  v->ncorrelation_ids = corr_count(e);
  v->correlation_ids_omitted = e->ids_omitted;
}

void mnemo_error_pending_by_severity(const mnemo_error_tracker_t *t,
                                     int64_t since_us,
                                     uint64_t out[MNEMO_SEV_COUNT]) {
  const mnemo_error_entry_t *e;
  memset(out, 0, sizeof(uint64_t) * MNEMO_SEV_COUNT);
  for (e = t->oldest; e != NULL; e = e->newer)
    if (e->last_us >= since_us)
      out[e->severity] += e->count;
}
