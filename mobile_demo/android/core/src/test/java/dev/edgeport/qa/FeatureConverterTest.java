package dev.edgeport.qa;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Windows (ids, type ids, mask) against the ones the Python pipeline fed the artifact. */
public class FeatureConverterTest {
    private static int[] padded(int[] head, int len, int pad) {
        int[] a = Arrays.copyOf(head, len);
        Arrays.fill(a, head.length, len, pad);
        return a;
    }

    @Test
    public void windowsMatchThePythonPipeline() throws Exception {
        FeatureConverter conv = Fixtures.converter();
        int seq = conv.maxSeqLen;
        int multiWindow = 0;
        for (Map<String, Object> c : Fixtures.cases()) {
            String name = (String) c.get("name");
            List<Feature> fs = conv.convert((String) c.get("question"), (String) c.get("context"));
            List<Map<String, Object>> ws = Fixtures.windows(c);
            assertEquals(name + ": number of windows", ws.size(), fs.size());
            if (fs.size() > 1) multiWindow++;
            for (int w = 0; w < fs.size(); w++) {
                Map<String, Object> win = ws.get(w);
                int n = ((Double) win.get("attention_mask_ones")).intValue();
                String at = name + " window " + w;
                assertArrayEquals(at + ": input_ids", padded(Fixtures.ints(win.get("input_ids")), seq, 0), fs.get(w).inputIds);
                assertArrayEquals(at + ": token_type_ids", padded(Fixtures.ints(win.get("token_type_ids")), seq, 0),
                        fs.get(w).tokenTypeIds);
                int[] mask = new int[seq];
                Arrays.fill(mask, 0, n, 1);
                assertArrayEquals(at + ": attention_mask", mask, fs.get(w).attentionMask);
            }
        }
        assertTrue("some passages need the stride", multiWindow >= 3);
    }

    @Test
    public void consecutiveWindowsShareDocStrideTokens() throws Exception {
        FeatureConverter conv = Fixtures.converter();
        Map<String, Object> longCase = null;
        for (Map<String, Object> c : Fixtures.cases()) if ("long_stride".equals(c.get("name"))) longCase = c;
        List<Feature> fs = conv.convert((String) longCase.get("question"), (String) longCase.get("context"));
        Feature a = fs.get(0), b = fs.get(1);
        int firstCtx = 0;
        while (!b.isContext(firstCtx)) firstCtx++;
        int lastA = a.length() - 1;
        while (!a.isContext(lastA)) lastA--;
        // The second window starts docStride context tokens before the first one ends.
        int startB = b.charStart[firstCtx];
        int shared = 0;
        for (int k = 0; k <= lastA; k++) if (a.isContext(k) && a.charStart[k] >= startB) shared++;
        assertEquals(conv.docStride, shared);
    }

    @Test
    public void longQuestionIsCutAt64Tokens() throws Exception {
        FeatureConverter conv = Fixtures.converter();
        String q = "why " + String.join(" ", java.util.Collections.nCopies(100, "really")) + " blue?";
        Feature f = conv.convert(q, "Because.").get(0);
        assertEquals(conv.tokenizer.sepId, f.inputIds[1 + 64]);
    }
}
