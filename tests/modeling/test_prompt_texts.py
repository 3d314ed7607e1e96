"""The prompt texts as the release writes them: each expected string is written out from the release's code."""

from __future__ import annotations

from modeling.prompt import build_prompt, question_for

FB02 = "\ufb02"  # the release writes "ﬂoating-point" with the U+FB02 ligature


def test_the_valence_question_prints_the_range_as_floats():
    """my_affectgpt/datasets/datasets/base_dataset.py lines 298-302: f"{self.minval}" of a float from the
    label file (cmumosi.py lines 75-76: min/max of the training valences), so -3.0, not -3."""
    want = ("Please identify the overall positive or negative emotional polarity of the main characters. "
            f"The output should be a {FB02}oating-point number ranging from -3.0 to 3.0. "
            "Here, -3.0 indicates extremely negative emotions, 0 indicates neutral emotions, and 3.0 indicates "
            "extremely positive emotions. "
            f"Please provide your judgment as a {FB02}oating-point number.")
    assert question_for("valence", valence_range=(-3, 3)) == want
    assert question_for("valence", valence_range=(-3.0, 3.0)) == want
    assert "ranging from -1.0 to 1.0. Here, -1.0 indicates" in question_for("valence")
    assert "ranging from -2.5 to 2.5. Here, -2.5 indicates" in question_for("valence", valence_range=(-2.5, 2.5))


def test_the_closed_set_question_joins_the_candidates_without_a_space():
    """base_dataset.py line 277 and mer2023.py line 72: ",".join(...) of the candidate labels."""
    assert question_for("closed", ["happy", "sad", "angry"]) == (
        "Please select the label that can best describe the person's emotional state from the provided candidate "
        "labels: happy,sad,angry.")


def test_the_face_and_frame_prompts_are_the_releases():
    """base_dataset.py lines 526-532 (multiface_audio_face_text) and 533-539 (multiframe_audio_frame_text)."""
    q = "Please recognize all possible emotional states of the character."
    assert build_prompt("I am fine.", q, "face") == (
        "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. "
        "The audio content is as follows: <Audio><AudioHere></Audio>. "
        "Meanwhile, we uniformly sample raw frames from the video and extract faces from these frames: "
        "<Video><FaceHere></Video>. "
        "The subtitle of this video is: <Subtitle>I am fine.</Subtitle>. "
        "Now, please answer my question based on all the provided information. "
        "Please recognize all possible emotional states of the character. ###Assistant: ")
    assert build_prompt("", q, "frame") == (
        "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. "
        "The audio content is as follows: <Audio><AudioHere></Audio>. "
        "Meanwhile, we uniformly sample raw frames from the video: <Video><FrameHere></Video>. "
        "The subtitle of this video is: <Subtitle></Subtitle>. "
        "Now, please answer my question based on all the provided information. "
        "Please recognize all possible emotional states of the character. ###Assistant: ")


def test_the_named_questions_are_the_releases():
    """base_dataset.py lines 255 (description), 266 (ov) and 313 (sentiment)."""
    assert question_for("description") == ("Please infer the person's emotional state and provide your reasoning "
                                            "process.")
    assert question_for("ov") == "Please recognize all possible emotional states of the character."
    assert question_for("sentiment") == ("Please select the most likely sentiment label that can best describe the "
                                         "person's emotional state: positive, negative, neutral.")
