/* Chat templates: messages -> the exact text a chat model was trained on.
 *
 * There is no Jinja engine here. Each known template is a layout written
 * out in C that reproduces what its Jinja source renders (Python Jinja2
 * with trim_blocks and lstrip_blocks, as transformers' apply_chat_template
 * uses), byte for byte, for conversations of system, user and assistant
 * messages without tools. The golden renders in
 * ../shared/data/chat_templates/golden_render.json are the reference.
 *
 * Layouts ("{x}" is a message's content, "|trim" Python's str.strip()):
 *
 *   llama3    llama.cpp's Llama-3 (Llama-3-8B-Instruct's template):
 *             {bos}<|start_header_id|>{role}<|end_header_id|>\n\n{x|trim}
 *             <|eot_id|> per message; bos defaults to "" as llama.cpp
 *             writes it (its tokenizer adds BOS itself).
 *   llama3.1  Llama-3.1-8B / 3.3-70B-Instruct (identical templates) and
 *   llama3.2  Llama-3.2-3B-Instruct: bos (default "<|begin_of_text|>"),
 *             then always a system header holding "Cutting Knowledge Date:
 *             December 2023\nToday Date: {date}\n\n{system|trim}", then the
 *             other messages as llama3. date defaults to "26 Jul 2024",
 *             the templates' own fallback; transformers passes today's date
 *             to 3.2 through strftime_now, so give `date` to match it.
 *   chatml    <|im_start|>{role}\n{x}<|im_end|>\n per message.
 *   qwen2.5   chatml, plus the system message "You are Qwen, created by
 *             Alibaba Cloud. You are a helpful assistant." when the first
 *             message is not a system message.
 *   qwen3     chatml without a default system message. An assistant
 *             message holding "</think>" is split as the template does: the
 *             reasoning before it is dropped from turns before the last
 *             user message and kept (in "<think>\n...\n</think>\n\n") in
 *             turns after it. `no_thinking` adds the empty think block the
 *             template writes for enable_thinking=false.
 *   rlhi      our own, for models trained from scratch (rlhi tokenizer
 *             train reserves its special tokens, RLHI_CHAT_RLHI_SPECIALS):
 *                 <|system|>\n{system}<|end|>\n
 *                 <|user|>\n{user}<|end|>\n
 *                 <|assistant|>\n{answer}<|end|>\n
 *             and "<|assistant|>\n" as the generation prompt. Contents are
 *             written verbatim (no trimming) and must not contain the
 *             markers, so that rlhi_chat_parse() gives back exactly the
 *             messages rendered. The system message, if any, comes first.
 *             End of turn: "<|end|>"; "<|endoftext|>" separates documents.
 *
 * Messages are plain C strings in UTF-8; roles are "system", "user" and
 * "assistant" (tool calls are not supported).
 */
#ifndef RLHI_CHAT_H
#define RLHI_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "rlhi/base.h"

enum rlhi_chat_kind {
    RLHI_CHAT_LLAMA3 = 1,
    RLHI_CHAT_LLAMA31,
    RLHI_CHAT_LLAMA32,
    RLHI_CHAT_CHATML,
    RLHI_CHAT_QWEN25,
    RLHI_CHAT_QWEN3,
    RLHI_CHAT_RLHI,
};

/* The special tokens the rlhi template needs, comma-separated, in the
 * order `rlhi tokenizer train` adds them by default. */
#define RLHI_CHAT_RLHI_SPECIALS                                             \
    "<|endoftext|>,<|system|>,<|user|>,<|assistant|>,<|end|>"

struct rlhi_chat_msg {
    const char *role;
    const char *content;
};

struct rlhi_chat_options {
    bool add_generation_prompt; /* end with the assistant header */
    const char *date;      /* llama3.1/3.2 "Today Date"; NULL: 26 Jul 2024 */
    const char *bos_token; /* llama3*: text written first; NULL: default */
    bool no_thinking;      /* qwen3: enable_thinking=false */
};

/* Where one assistant message landed in the rendered text, as byte offsets:
 * [start, end) is what the template wrote for its body (the trimmed content
 * for llama*, the think block and content for qwen3), [end, eot_end) the
 * end-of-turn marker. Tokens from start to eot_end are the ones an SFT loss
 * scores. */
struct rlhi_chat_span {
    size_t msg; /* index of the message in the input */
    size_t start, end, eot_end;
};

/* Short name of a kind ("llama3", "llama3.1", "llama3.2", "chatml",
 * "qwen2.5", "qwen3", "rlhi"), or "unknown". */
const char *rlhi_chat_kind_name(enum rlhi_chat_kind kind);

/* Looks a kind up by the name above. 0, or RLHI_ENOTFOUND with a message
 * listing the names. */
int rlhi_chat_kind_from_name(const char *name, enum rlhi_chat_kind *out);

/* The end-of-turn marker a model of this kind writes after an answer
 * ("<|eot_id|>", "<|im_end|>", "<|end|>"): generation stops on it. Static;
 * NULL for an unknown kind. */
const char *rlhi_chat_eot(enum rlhi_chat_kind kind);

/* The rlhi template as Jinja source, for tokenizer_config.json, so that
 * transformers, vLLM and llama.cpp render what rlhi_chat_render() does.
 * Static. */
const char *rlhi_chat_rlhi_jinja(void);

/* Recognises a template from its Jinja source by distinctive markers.
 * Returns 0 and sets *out, or RLHI_ENOTFOUND ("unknown chat template ...",
 * with the first characters of the source) when no known layout matches,
 * RLHI_EINVAL for a NULL source. */
int rlhi_chat_template_detect(const char *jinja_source,
                              enum rlhi_chat_kind *out);

/* Reads the chat template of a Hugging Face model directory: the
 * `chat_template` of `dir`/tokenizer_config.json (a string, or a list of
 * {name, template} of which "default" is taken), else `dir`/
 * chat_template.jinja, and detects it. Errors: RLHI_EIO / RLHI_ENOTFOUND
 * when no template is found (naming the file), RLHI_EFORMAT when the JSON
 * is malformed (file and line), or those of rlhi_chat_template_detect(). */
int rlhi_chat_template_from_dir(const char *dir, enum rlhi_chat_kind *out);

/* Renders `n` messages with template `kind` and appends the text to `out`
 * (which the caller owns; it is left as it was on error). `opt` may be
 * NULL (all defaults, no generation prompt). When `spans` is not NULL it
 * must have room for `n` entries: one is written per assistant message, in
 * order, and *nspans (when not NULL) gets their count.
 * Errors: RLHI_EINVAL with the message index for a NULL role or content,
 * an unknown role, a system message after the first (rlhi), or rlhi
 * markers inside a content (rlhi); RLHI_ENOMEM. */
int rlhi_chat_render(enum rlhi_chat_kind kind, const struct rlhi_chat_msg *msgs,
                     size_t n, const struct rlhi_chat_options *opt,
                     struct rlhi_buf *out, struct rlhi_chat_span *spans,
                     size_t *nspans);

/* Parses text rendered with the rlhi template back into messages. On
 * success *msgs is one new allocation (the array and the strings it points
 * to; the caller frees it with rlhi_free) of *n messages. When the text
 * ends in an unfinished assistant turn (a generation prompt, perhaps with
 * part of an answer), that turn is returned as the last message and
 * *open_turn (when not NULL) is set. Only RLHI_CHAT_RLHI is supported
 * (others give RLHI_ENOTIMPL). Errors: RLHI_EFORMAT naming the byte offset
 * where the text stops following the layout; RLHI_ENOMEM. */
int rlhi_chat_parse(enum rlhi_chat_kind kind, const char *text, size_t len,
                    struct rlhi_chat_msg **msgs, size_t *n, bool *open_turn);

#endif
