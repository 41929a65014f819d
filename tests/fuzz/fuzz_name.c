/*
 * fuzz_name.c - the relay's check of a /nick name (chat_broker_name_ok,
 * ICU's spoof checker underneath) on any bytes. Property: a name it takes
 * is 1 to CHAT_NAME_MAX bytes of well-formed UTF-8 without ASCII controls,
 * spaces, DEL, '<' or '>', so that "<NAME> " always reads as a prefix.
 */
#include "forkloop/chat.h"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size > 4 * CHAT_NAME_MAX)
		return 0;
	s = fuzz_strndup(data, size);
	if (chat_broker_name_ok(s, size)) {
		FUZZ_CHECK(size >= 1 && size <= CHAT_NAME_MAX);
		for (size_t i = 0; i < size; i++) {
			unsigned char c = data[i];

			FUZZ_CHECK(c > 0x20 && c != 0x7f && c != '<' &&
			           c != '>');
			FUZZ_CHECK(c != 0xc0 && c != 0xc1 && c < 0xf5);
		}
	}
	free(s);
	return 0;
}
