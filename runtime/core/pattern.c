/* Lua 5.1 patterns with a step budget and a bounded recursion depth: see
 * pattern.h for the rules and the reasons.
 *
 * A backtracking matcher that walks the pattern text directly (errors are
 * found where LuaJIT finds them, lazily). Each function returns MATCHED
 * (with *end set), FAILED or a negative error code, which every caller
 * passes straight up: an error or a spent budget unwinds the whole search
 * at once. Recursion happens where a choice must be undone on failure
 * (captures, quantifiers, '?'); the rest of a pattern is walked in a loop,
 * and a nested call is refused past MNEMO_PATTERN_MAX_DEPTH. */
#include "pattern.h"

#include <string.h>

#define FAILED 0
#define MATCHED 1
#define CONTINUE 2 /* the item matched: go on with the rest of the pattern */

/* Capture lengths that are no length. */
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)

/* A set scanned or tested costs one more step per this many bytes. */
#define BYTES_PER_STEP 16

static const char msg_ends_with_percent[] = "malformed pattern (ends with '%')";
static const char msg_missing_bracket[] = "malformed pattern (missing ']')";
static const char msg_capture_index[] = MNEMO_PATTERN_MSG_CAPTURE_INDEX;
static const char msg_pattern_capture[] = "invalid pattern capture";
static const char msg_too_many[] = "too many captures";
static const char msg_frontier[] = "missing '[' after '%f' in pattern";
static const char msg_balance[] = "unbalanced pattern";
static const char msg_complex[] = "pattern too complex";
static const char msg_budget[] = "pattern step budget exhausted";

typedef struct matcher {
  const unsigned char *src, *pat;
  size_t slen, plen;
  uint64_t steps; /* left */
  int depth;      /* nested match_here calls */
  int level;      /* captures opened */
  struct {
    size_t start;
    ptrdiff_t len; /* or CAP_UNFINISHED, CAP_POSITION */
  } cap[MNEMO_PATTERN_MAX_CAPTURES];
  const char *error;
} matcher_t;

static int match_here(matcher_t *m, size_t s, size_t p, size_t *end);

static int charge(matcher_t *m, uint64_t n) {
  if (m->steps < n) {
    m->steps = 0;
    m->error = msg_budget;
    return MNEMO_PATTERN_EBUDGET;
  }
  m->steps -= n;
  return 0;
}

static int malformed(matcher_t *m, const char *msg) {
  m->error = msg;
  return MNEMO_PATTERN_EPATTERN;
}

/* Character classes of the C locale, whatever the process's locale: ASCII
 * only, so bytes >= 0x80 are in none (as in LuaJIT's own table). */
static int is_upper(unsigned c) {
  return c >= 'A' && c <= 'Z';
}
static int is_lower(unsigned c) {
  return c >= 'a' && c <= 'z';
}
static int is_digit(unsigned c) {
  return c >= '0' && c <= '9';
}
static int is_alpha(unsigned c) {
  return is_upper(c) || is_lower(c);
}
static int is_alnum(unsigned c) {
  return is_alpha(c) || is_digit(c);
}
static int is_graph(unsigned c) {
  return c > ' ' && c < 0x7f;
}

static int is_xdigit(unsigned c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Does byte c belong to class %cl? A letter that names no class, and any
 * other byte, stands for itself. Upper case: the complement. */
static int class_has(unsigned c, unsigned cl) {
  int in;
  switch (cl | 0x20) { /* lower case, for letters only */
  case 'a':
    in = is_alpha(c);
    break;
  case 'c':
    in = c < ' ' || c == 0x7f;
    break;
  case 'd':
    in = is_digit(c);
    break;
  case 'g':
    in = is_graph(c);
    break;
  case 'l':
    in = is_lower(c);
    break;
  case 'p':
    in = is_graph(c) && !is_alnum(c);
    break;
  case 's':
    in = c == ' ' || (c >= '\t' && c <= '\r');
    break;
  case 'u':
    in = is_upper(c);
    break;
  case 'w':
    in = is_alnum(c);
    break;
  case 'x':
    in = is_xdigit(c);
    break;
  case 'z':
    in = c == 0;
    break;
  default:
    return cl == c;
  }
  return is_lower(cl) ? in : !in;
}

/* Does c belong to the set pat[p] == '[' .. pat[close] == ']'? */
static int set_has(const matcher_t *m, unsigned c, size_t p, size_t close) {
  const unsigned char *pat = m->pat;
  int in = 1;
  if (pat[p + 1] == '^') {
    in = 0;
    p++;
  }
  for (p++; p < close; p++) {
    if (pat[p] == '%') {
      p++;
      if (class_has(c, pat[p]))
        return in;
    } else if (pat[p + 1] == '-' && p + 2 < close) {
      if (pat[p] <= c && c <= pat[p + 2])
        return in;
      p += 2;
    } else if (pat[p] == c) {
      return in;
    }
  }
  return !in;
}

/* The end of the single-character class at pat[p] (one past it), or an
 * error. The first byte of a set is in it even if it is ']'. */
static int class_end(matcher_t *m, size_t p, size_t *ep) {
  const unsigned char *pat = m->pat;
  size_t plen = m->plen;
  unsigned c = pat[p++];
  if (c == '%') {
    if (p >= plen)
      return malformed(m, msg_ends_with_percent);
    *ep = p + 1;
    return 0;
  }
  if (c == '[') {
    if (p < plen && pat[p] == '^')
      p++;
    do {
      if (p >= plen)
        return malformed(m, msg_missing_bracket);
      c = pat[p++];
      if (c == '%' && p < plen)
        p++; /* an escaped byte, ']' included */
    } while (p >= plen || pat[p] != ']');
    *ep = p + 1;
    return 0;
  }
  *ep = p;
  return 0;
}

/* Does byte c match the class pat[p, ep)? */
static int single_match(const matcher_t *m, unsigned c, size_t p, size_t ep) {
  switch (m->pat[p]) {
  case '.':
    return 1;
  case '%':
    return class_has(c, m->pat[p + 1]);
  case '[':
    return set_has(m, c, p, ep - 1);
  default:
    return m->pat[p] == c;
  }
}

/* What testing one byte against the class pat[p, ep) costs. */
static uint64_t test_cost(size_t p, size_t ep) {
  return 1 + (ep - p) / BYTES_PER_STEP;
}

/* Greedy repetition of pat[p, ep) from s, then the rest of the pattern
 * after the quantifier at ep, giving back one byte at a time. */
static int expand_max(matcher_t *m, size_t s, size_t p, size_t ep,
                      size_t *end) {
  uint64_t cost = test_cost(p, ep);
  size_t i = 0;
  int rc;
  while (s + i < m->slen && single_match(m, m->src[s + i], p, ep)) {
    if ((rc = charge(m, cost)) < 0)
      return rc;
    i++;
  }
  for (;;) {
    rc = match_here(m, s + i, ep + 1, end);
    if (rc != FAILED || i == 0)
      return rc;
    i--;
  }
}

/* Lazy repetition: the rest of the pattern first, one more byte if not. */
static int expand_min(matcher_t *m, size_t s, size_t p, size_t ep,
                      size_t *end) {
  uint64_t cost = test_cost(p, ep);
  int rc;
  for (;;) {
    rc = match_here(m, s, ep + 1, end);
    if (rc != FAILED)
      return rc;
    if ((rc = charge(m, cost)) < 0)
      return rc;
    if (s >= m->slen || !single_match(m, m->src[s], p, ep))
      return FAILED;
    s++;
  }
}

static int open_capture(matcher_t *m, size_t s, size_t p, ptrdiff_t what,
                        size_t *end) {
  int rc;
  if (m->level >= MNEMO_PATTERN_MAX_CAPTURES)
    return malformed(m, msg_too_many);
  m->cap[m->level].start = s;
  m->cap[m->level].len = what;
  m->level++;
  rc = match_here(m, s, p, end);
  if (rc == FAILED)
    m->level--;
  return rc;
}

/* ')' closes the innermost capture still open. */
static int close_capture(matcher_t *m, size_t s, size_t p, size_t *end) {
  int l, rc;
  for (l = m->level - 1; l >= 0; l--)
    if (m->cap[l].len == CAP_UNFINISHED)
      break;
  if (l < 0)
    return malformed(m, msg_pattern_capture);
  m->cap[l].len = (ptrdiff_t)(s - m->cap[l].start);
  rc = match_here(m, s, p, end);
  if (rc == FAILED)
    m->cap[l].len = CAP_UNFINISHED;
  return rc;
}

/* %bxy at pat[p - 2]: from an x at *s to its matching y. */
static int match_balance(matcher_t *m, size_t *s, size_t p) {
  unsigned open, close;
  size_t i = *s;
  int depth = 1, rc;
  if (p + 1 >= m->plen)
    return malformed(m, msg_balance);
  open = m->pat[p];
  close = m->pat[p + 1];
  if (i >= m->slen || m->src[i] != open)
    return FAILED;
  while (++i < m->slen) {
    if ((rc = charge(m, 1)) < 0)
      return rc;
    if (m->src[i] == close) {
      if (--depth == 0) {
        *s = i + 1;
        return CONTINUE;
      }
    } else if (m->src[i] == open) {
      depth++;
    }
  }
  return FAILED;
}

/* %f[set] at pat[*p]: the byte before s is not in the set, the one at s
 * is (a NUL before the start and at the end). */
static int match_frontier(matcher_t *m, size_t s, size_t *p) {
  size_t set = *p + 2, ep;
  unsigned before, at;
  int rc;
  if (set >= m->plen || m->pat[set] != '[')
    return malformed(m, msg_frontier);
  if ((rc = class_end(m, set, &ep)) < 0)
    return rc;
  if ((rc = charge(m, 2 * test_cost(set, ep))) < 0)
    return rc;
  before = s == 0 ? 0 : m->src[s - 1];
  at = s < m->slen ? m->src[s] : 0;
  if (set_has(m, before, set, ep - 1) || !set_has(m, at, set, ep - 1))
    return FAILED;
  *p = ep;
  return CONTINUE;
}

/* %1-%9 (and %0, an error): the text of a closed capture again. */
static int match_backref(matcher_t *m, size_t *s, unsigned digit) {
  int l = (int)digit - '1';
  size_t len;
  int rc;
  if (l < 0 || l >= m->level || m->cap[l].len == CAP_UNFINISHED)
    return malformed(m, msg_capture_index);
  if (m->cap[l].len == CAP_POSITION)
    return FAILED; /* as in LuaJIT: its length reads as huge */
  len = (size_t)m->cap[l].len;
  if ((rc = charge(m, 1 + len / BYTES_PER_STEP)) < 0)
    return rc;
  if (m->slen - *s < len || memcmp(m->src + m->cap[l].start, m->src + *s, len))
    return FAILED;
  *s += len;
  return CONTINUE;
}

/* One single-character class at pat[*p], with its quantifier if any. */
static int match_item(matcher_t *m, size_t *s, size_t *p, size_t *end) {
  size_t ep;
  unsigned quantifier;
  int rc, hit;
  if ((rc = class_end(m, *p, &ep)) < 0)
    return rc;
  if ((rc = charge(m, test_cost(*p, ep))) < 0)
    return rc;
  hit = *s < m->slen && single_match(m, m->src[*s], *p, ep);
  quantifier = ep < m->plen ? m->pat[ep] : 0;
  switch (quantifier) {
  case '?':
    if (hit) {
      rc = match_here(m, *s + 1, ep + 1, end);
      if (rc != FAILED)
        return rc;
    }
    *p = ep + 1;
    return CONTINUE;
  case '*':
    return expand_max(m, *s, *p, ep, end);
  case '+':
    return hit ? expand_max(m, *s + 1, *p, ep, end) : FAILED;
  case '-':
    return expand_min(m, *s, *p, ep, end);
  default:
    if (!hit)
      return FAILED;
    (*s)++;
    *p = ep;
    return CONTINUE;
  }
}

/* The special items that start with '%': %b, %f, back-references; other
 * escapes are classes (match_item). */
static int match_escape(matcher_t *m, size_t *s, size_t *p, size_t *end) {
  unsigned c;
  int rc;
  if (*p + 1 >= m->plen) /* a final '%': match_item reports it */
    return match_item(m, s, p, end);
  c = m->pat[*p + 1];
  if (c == 'b') {
    rc = match_balance(m, s, *p + 2);
    if (rc == CONTINUE)
      *p += 4;
    return rc;
  }
  if (c == 'f')
    return match_frontier(m, *s, p);
  if (is_digit(c)) {
    rc = match_backref(m, s, c);
    if (rc == CONTINUE)
      *p += 2;
    return rc;
  }
  return match_item(m, s, p, end);
}

/* Walks the pattern from pat[p] against the subject from src[s]. */
static int match_rest(matcher_t *m, size_t s, size_t p, size_t *end) {
  int rc;
  for (;;) {
    if ((rc = charge(m, 1)) < 0)
      return rc;
    if (p == m->plen) {
      *end = s;
      return MATCHED;
    }
    switch (m->pat[p]) {
    case '(':
      if (p + 1 < m->plen && m->pat[p + 1] == ')')
        return open_capture(m, s, p + 2, CAP_POSITION, end);
      return open_capture(m, s, p + 1, CAP_UNFINISHED, end);
    case ')':
      return close_capture(m, s, p + 1, end);
    case '$':
      if (p + 1 == m->plen) { /* else an ordinary '$' */
        *end = s;
        return s == m->slen ? MATCHED : FAILED;
      }
      rc = match_item(m, &s, &p, end);
      break;
    case '%':
      rc = match_escape(m, &s, &p, end);
      break;
    default:
      rc = match_item(m, &s, &p, end);
      break;
    }
    if (rc != CONTINUE)
      return rc;
  }
}

static int match_here(matcher_t *m, size_t s, size_t p, size_t *end) {
  int rc;
  if (m->depth >= MNEMO_PATTERN_MAX_DEPTH)
    return malformed(m, msg_complex);
  m->depth++;
  rc = match_rest(m, s, p, end);
  m->depth--;
  return rc;
}

static void fill_match(const matcher_t *m, size_t start, size_t end,
                       mnemo_pattern_match_t *match) {
  int i;
  match->start = start;
  match->end = end;
  match->ncaptures = m->level;
  for (i = 0; i < m->level; i++) {
    mnemo_pattern_capture_t *c = &match->captures[i];
    c->start = m->cap[i].start;
    c->len = 0;
    if (m->cap[i].len == CAP_POSITION) {
      c->kind = MNEMO_PATTERN_CAPTURE_POSITION;
    } else if (m->cap[i].len == CAP_UNFINISHED) {
      c->kind = MNEMO_PATTERN_CAPTURE_UNFINISHED;
    } else {
      c->kind = MNEMO_PATTERN_CAPTURE_STRING;
      c->len = (size_t)m->cap[i].len;
    }
  }
}

int mnemo_pattern_find(const char *pattern, size_t plen, const char *subject,
                       size_t slen, size_t init, unsigned flags,
                       uint64_t *steps, mnemo_pattern_match_t *match) {
  matcher_t m;
  size_t s = init, p = 0, end = 0;
  int anchor, rc;
  match->error = NULL;
  match->ncaptures = 0;
  if (init > slen)
    return 0;
  m.src = (const unsigned char *)subject;
  m.pat = (const unsigned char *)pattern;
  m.slen = slen;
  m.plen = plen;
  m.steps = *steps;
  m.error = NULL;
  anchor =
      !(flags & MNEMO_PATTERN_CARET_LITERAL) && plen > 0 && pattern[0] == '^';
  if (anchor)
    p = 1;
  for (;;) {
    m.level = 0;
    m.depth = 0;
    rc = charge(&m, 1);
    if (rc == 0)
      rc = match_here(&m, s, p, &end);
    if (rc != FAILED || anchor || s == slen)
      break;
    s++;
  }
  *steps = m.steps;
  if (rc < 0) {
    match->error = m.error;
    return rc;
  }
  if (rc == FAILED)
    return 0;
  fill_match(&m, s, end, match);
  return 1;
}

int mnemo_pattern_find_plain(const char *needle, size_t nlen,
                             const char *subject, size_t slen, size_t init,
                             uint64_t *steps, size_t *pos) {
  uint64_t cost;
  const char *hit;
  if (init > slen)
    return 0;
  cost = 1 + (uint64_t)(slen - init + nlen) / BYTES_PER_STEP;
  if (*steps < cost) {
    *steps = 0;
    return MNEMO_PATTERN_EBUDGET;
  }
  *steps -= cost;
  if (nlen == 0) {
    *pos = init;
    return 1;
  }
  hit = memmem(subject + init, slen - init, needle, nlen);
  if (hit == NULL)
    return 0;
  *pos = (size_t)(hit - subject);
  return 1;
}

int mnemo_pattern_has_specials(const char *pattern, size_t plen) {
  size_t i;
  for (i = 0; i < plen; i++)
    if (pattern[i] != '\0' && strchr("^$*+?.([%-", pattern[i]))
      return 1;
  return 0;
}
