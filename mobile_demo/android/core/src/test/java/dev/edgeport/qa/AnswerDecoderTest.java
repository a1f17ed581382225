package dev.edgeport.qa;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Decoding the stored logits gives the Python pipeline's answers: text, offsets, score. */
public class AnswerDecoderTest {
    static void assertSameAnswers(String name, List<Map<String, Object>> expected, List<Answer> got) {
        assertEquals(name + ": number of answers", expected.size(), got.size());
        for (int k = 0; k < got.size(); k++) {
            Map<String, Object> e = expected.get(k);
            Answer a = got.get(k);
            String at = name + " answer " + k;
            assertEquals(at + ": text", e.get("answer"), a.text);
            assertEquals(at + ": start", ((Double) e.get("start")).intValue(), a.start);
            assertEquals(at + ": end", ((Double) e.get("end")).intValue(), a.end);
            double s = (Double) e.get("score");
            assertEquals(at + ": score", s, a.score, 1e-9 * Math.max(1.0, s));
        }
    }

    @Test
    public void storedLogitsDecodeToThePipelinesAnswers() throws Exception {
        FeatureConverter conv = Fixtures.converter();
        int maxAnswerLen = Fixtures.setting("max_answer_len");
        int nullOnTop = 0;
        for (Map<String, Object> c : Fixtures.cases()) {
            String context = (String) c.get("context");
            List<Feature> fs = conv.convert((String) c.get("question"), context);
            List<float[]> starts = new ArrayList<>(), ends = new ArrayList<>();
            for (Map<String, Object> w : Fixtures.windows(c)) {
                starts.add(Fixtures.logits(w, "start_logits", conv.maxSeqLen));
                ends.add(Fixtures.logits(w, "end_logits", conv.maxSeqLen));
            }
            AnswerDecoder dec = new AnswerDecoder(((Double) c.get("top_k")).intValue(), maxAnswerLen,
                    (Boolean) c.get("handle_impossible_answer"));
            List<Answer> got = dec.decode(context, fs, starts, ends);
            assertSameAnswers((String) c.get("name"), Fixtures.positiveAnswers(c), got);
            if (got.get(0).text.isEmpty()) nullOnTop++;
        }
        assertTrue("the null answer wins somewhere", nullOnTop >= 1);
    }

    @Test(expected = IllegalArgumentException.class)
    public void refusesZeroTopK() {
        new AnswerDecoder(0, 15, false);
    }
}
