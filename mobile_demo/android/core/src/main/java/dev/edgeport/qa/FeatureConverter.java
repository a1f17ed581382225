package dev.edgeport.qa;

import java.util.ArrayList;
import java.util.List;

/**
 * Turns a (question, context) pair into model windows the way transformers' question-answering pipeline
 * does with a fast tokenizer: the question first, truncation of the context only ({@code only_second}),
 * overflowing windows that overlap by {@code docStride} tokens (huggingface/tokenizers
 * {@code Encoding::truncate} with a stride), each window {@code [CLS] q [SEP] c [SEP]}, type ids 0 then 1.
 */
public final class FeatureConverter {
    public final BertTokenizer tokenizer;
    public final int maxSeqLen;
    public final int docStride;
    public final int maxQueryLen;

    /**
     * @param maxSeqLen the artifact's static sequence length (384 for the shipped export)
     * @param docStride tokens shared by consecutive windows (transformers: min(maxSeqLen / 2, 128))
     * @param maxQueryLen question tokens kept (longer questions are cut at the end); 0 keeps all
     */
    public FeatureConverter(BertTokenizer tokenizer, int maxSeqLen, int docStride, int maxQueryLen) {
        this.tokenizer = tokenizer;
        this.maxSeqLen = maxSeqLen;
        this.docStride = docStride;
        this.maxQueryLen = maxQueryLen;
    }

    /**
     * The windows for one pair, in context order.
     *
     * @throws IllegalArgumentException when the question leaves no more than {@code docStride} tokens for
     *     the context (the tokenizers library refuses such a stride too)
     */
    public List<Feature> convert(String question, String context) {
        Encoding q = tokenizer.encode(cutQuestion(question));
        Encoding c = tokenizer.encode(context);
        int budget = maxSeqLen - q.size() - 3;  // [CLS] q [SEP] ... [SEP]
        List<Feature> out = new ArrayList<>();
        if (c.size() <= budget) {
            out.add(window(q, c, 0, c.size()));
            return out;
        }
        if (docStride >= budget)
            throw new IllegalArgumentException("question of " + q.size() + " tokens leaves " + budget
                    + " context tokens per window, not more than the stride " + docStride);
        int step = budget - docStride;
        for (int from = 0; ; from += step) {
            int to = Math.min(from + budget, c.size());
            out.add(window(q, c, from, to));
            if (to == c.size()) return out;
        }
    }

    /**
     * The question cut after its {@code maxQueryLen}-th token, as text (the Python pipeline cuts the text
     * at that token's last character, then tokenizes again).
     */
    public String cutQuestion(String question) {
        Encoding q = tokenizer.encode(question);
        if (maxQueryLen <= 0 || q.size() <= maxQueryLen) return question;
        int[] cps = question.codePoints().toArray();
        return new String(cps, 0, q.end[maxQueryLen - 1]);
    }

    private Feature window(Encoding q, Encoding c, int from, int to) {
        Feature f = new Feature(maxSeqLen);
        java.util.Arrays.fill(f.inputIds, tokenizer.padId);
        int p = 0;
        f.inputIds[p++] = tokenizer.clsId;
        for (int t = 0; t < q.size(); t++) f.inputIds[p++] = q.ids[t];
        f.inputIds[p++] = tokenizer.sepId;
        for (int t = from; t < to; t++, p++) {
            f.inputIds[p] = c.ids[t];
            f.tokenTypeIds[p] = 1;
            f.charStart[p] = c.start[t];
            f.charEnd[p] = c.end[t];
            f.wordIds[p] = c.wordIds[t];
        }
        f.inputIds[p] = tokenizer.sepId;
        f.tokenTypeIds[p++] = 1;
        for (int k = 0; k < p; k++) f.attentionMask[k] = 1;
        return f;
    }
}
