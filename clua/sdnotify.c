/*
 * sdnotify.c - validation and sanitising around libsystemd's sd_notify.
 * libsystemd does the protocol; this file makes sure what we hand it can
 * neither inject a second assignment nor exceed one datagram.
 */
#include <string.h>

#include <systemd/sd-daemon.h>

#include "sdnotify.h"

int clua_sd_send(const char *state)
{
	return sd_notify(0, state);
}

static int is_key_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

const char *clua_sd_state_invalid(const char *state, size_t len)
{
	size_t i = 0;

	if (len == 0)
		return "empty state";
	if (len > CLUA_NOTIFY_MAX)
		return "state longer than 4096 bytes";
	if (memchr(state, '\0', len) != NULL)
		return "state contains a NUL byte";
	/* systemd splits a message on CR as well as LF: a CR inside a value
	 * would start another assignment unseen by the line check below. */
	if (memchr(state, '\r', len) != NULL)
		return "state contains a carriage return";
	while (i < len) {
		size_t key = i;
		while (i < len && is_key_char((unsigned char)state[i]))
			i++;
		if (i == key || i == len || state[i] != '=')
			return "each line must be KEY=VALUE (KEY of A-Z, 0-9, _)";
		while (i < len && state[i] != '\n')
			i++;
		if (i < len)
			i++;	/* past '\n'; a final newline ends the text */
	}
	return NULL;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if none.
 * Rejects overlong forms, surrogates and code points past U+10FFFF. */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
	size_t need, i;
	unsigned long cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		need = 2, cp = s[0] & 0x1F;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		need = 3, cp = s[0] & 0x0F;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		need = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (need > n)
		return 0;
	for (i = 1; i < need; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if ((need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) ||
	    (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
		return 0;
	return need;
}

size_t clua_sd_sanitize(char *out, size_t cap, const char *in, size_t len)
{
	static const char replacement[] = "\xEF\xBF\xBD";
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0, i = 0;

	while (i < len) {
		const char *piece = (const char *)s + i;
		size_t n = utf8_sequence(s + i, len - i), take = n;

		if (n == 0) {
			piece = replacement, take = 3, n = 1;
		} else if (n == 1 && (s[i] < 0x20 || s[i] == 0x7F)) {
			piece = " ", take = 1;
		} else if (n == 2 && s[i] == 0xC2 && s[i + 1] < 0xA0) {
			piece = " ", take = 1;	/* C1 control, U+0080..U+009F */
		}
		if (o + take >= cap)
			break;
		memcpy(out + o, piece, take);
		o += take;
		i += n;
	}
	out[o] = '\0';
	return o;
}

int clua_sd_watchdog_usec(uint64_t *usec)
{
	return sd_watchdog_enabled(0, usec);
}
