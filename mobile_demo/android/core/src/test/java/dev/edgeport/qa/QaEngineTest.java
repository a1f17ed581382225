package dev.edgeport.qa;

import static org.junit.Assert.assertEquals;

import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** The whole path (manifest, tokenizer.json, windows, interpreter by signature names, decoding). */
public class QaEngineTest {
    /** Answers each window with the logits the artifact gave the Python pipeline for the same input_ids. */
    private static QaInterpreter replay(Map<String, Object> c, int seq) {
        return inputs -> {
            for (Map<String, Object> w : Fixtures.windows(c)) {
                int[] ids = Fixtures.ints(w.get("input_ids"));
                if (Arrays.equals(ids, Arrays.copyOf(inputs.get("input_ids"), ids.length))) {
                    Map<String, float[]> out = new HashMap<>();
                    out.put("start_logits", Fixtures.logits(w, "start_logits", seq));
                    out.put("end_logits", Fixtures.logits(w, "end_logits", seq));
                    return out;
                }
            }
            throw new AssertionError("the interpreter was fed a window the pipeline never ran");
        };
    }

    @Test
    public void answersEqualThePipelines() throws Exception {
        ExportManifest m = ExportManifest.parse(Fixtures.read("edgeport.json"));
        String tj = Fixtures.read("tokenizer.json");
        for (Map<String, Object> c : Fixtures.cases()) {
            QaEngine engine = new QaEngine(m, tj, replay(c, m.seqLen()));
            AnswerDecoder dec = new AnswerDecoder(((Double) c.get("top_k")).intValue(), 15,
                    (Boolean) c.get("handle_impossible_answer"));
            QaEngine.Result r = engine.answer((String) c.get("question"), (String) c.get("context"), dec);
            assertEquals(Fixtures.windows(c).size(), r.windows);
            AnswerDecoderTest.assertSameAnswers((String) c.get("name"), Fixtures.positiveAnswers(c), r.answers);
        }
    }

    @Test
    public void manifestGivesTheSignatureNamesAndLength() throws Exception {
        ExportManifest m = ExportManifest.parse(Fixtures.read("edgeport.json"));
        assertEquals(Fixtures.setting("max_seq_len"), m.seqLen());
        assertEquals("int32", m.input("input_ids").dtype);
        List<String> outs = Arrays.asList(m.outputs.get(0).name, m.outputs.get(1).name);
        assertEquals(true, outs.contains("start_logits") && outs.contains("end_logits"));
    }

    @Test
    public void manifestGivesTheSignatureKeyWhenItHasOne() throws Exception {
        String json = Fixtures.read("edgeport.json");
        assertEquals(null, ExportManifest.parse(json.replace("\"signature_key\": \"serving_default\",", "")).signatureKey);
        String withKey = json.contains("\"signature_key\"") ? json
                : json.replace("\"static_shapes\": true,", "\"static_shapes\": true, \"signature_key\": \"serving_default\",");
        assertEquals("serving_default", ExportManifest.parse(withKey).signatureKey);
    }

    @Test(expected = IllegalArgumentException.class)
    public void refusesAnExportForAnotherTask() throws Exception {
        ExportManifest.parse(Fixtures.read("edgeport.json").replace("\"question-answering\"", "\"fill-mask\""));
    }

    @Test(expected = IllegalArgumentException.class)
    public void refusesAnEmptyQuestion() throws Exception {
        ExportManifest m = ExportManifest.parse(Fixtures.read("edgeport.json"));
        new QaEngine(m, Fixtures.read("tokenizer.json"), inputs -> null).answer("  ", "text", new AnswerDecoder(1, 15, false));
    }
}
