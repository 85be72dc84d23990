"""simclrv2.main_job.report: the aims are judged as they are stated."""


def test_aims_are_judged_as_stated():
    from simclrv2.main_job.report import aims

    def rows(**top1):
        return [{"stage": k, "top1": v} for k, v in top1.items()]

    judged = aims(rows(pixels=0.85, lineareval_100pct=0.84, finetune_1pct=0.70, scratch_1pct=0.66,
                       finetune_10pct=0.70, distill=0.74, student_10pct=0.74))
    assert [a["met"] for a in judged] == [False, False, True, True]
    judged = aims(rows(pixels=0.85, lineareval_100pct=0.86, finetune_1pct=0.72, scratch_1pct=0.66,
                       finetune_10pct=0.71, distill=None, student_10pct=0.74))
    assert [a["met"] for a in judged] == [True, True, False, None]
