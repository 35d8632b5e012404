//! Free text to a flow or a command: the router is asked for structured
//! output, a sloppy answer is still read, and its spend shows as "routing".

use soloist::domain::{ChatKind, InboundContent};

use crate::fake_llm::{Behavior, DEFAULT_DRAFT};
use crate::helpers::{Db, TestApp, texts};
use crate::on_both_backends;

on_both_backends!(
    free_text_routing_asks_for_structured_output_and_is_costed_as_routing,
    a_router_that_answers_with_a_bare_option_name_is_understood,
    free_text_in_a_group_routed_to_the_digest_gets_the_report_refusal_not_the_digest,
);

async fn free_text_routing_asks_for_structured_output_and_is_costed_as_routing(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.then(Behavior::reply(
        "{\"intent\": \"cost\", \"confidence\": 0.95}",
    ));

    let report = texts(&app.say("how much have the models cost me").await);

    let format = app
        .llm
        .response_format(0)
        .expect("structured output asked for");
    assert_eq!(format["type"], "json_schema", "{format}");
    let names = format["json_schema"]["schema"]["properties"]["intent"]["enum"].to_string();
    assert!(
        names.contains("\"draft\"") && names.contains("\"cost\"") && names.contains("\"none\""),
        "{names}"
    );
    assert!(report.contains("routing"), "{report}");
    assert!(!report.contains("(none)"), "{report}");
}

async fn a_router_that_answers_with_a_bare_option_name_is_understood(db: Db) {
    let app = TestApp::spawn(db).await;
    app.llm.then(Behavior::reply("draft"));

    let replies = texts(&app.say("write a post about the new audit price").await);

    assert!(replies.contains(DEFAULT_DRAFT), "{replies}");
}

async fn free_text_in_a_group_routed_to_the_digest_gets_the_report_refusal_not_the_digest(db: Db) {
    // The digest is a flow and a command: free text reaches it through the
    // command, which keeps reports (costs, open approvals) out of groups.
    let app = TestApp::spawn(db).await;
    app.llm.then(Behavior::reply(
        "{\"intent\": \"digest\", \"confidence\": 0.95}",
    ));
    let mut inbound = app.inbound(InboundContent::Text("send me the digest".into()));
    inbound.chat_kind = ChatKind::Group;

    let replies = texts(&app.deliver(&inbound).await);

    let names =
        app.llm
            .response_format(0)
            .expect("structured output asked for")["json_schema"]["schema"]["properties"]["intent"]
            ["enum"]
            .to_string();
    assert_eq!(
        names.matches("\"digest\"").count(),
        1,
        "offered once: {names}"
    );
    assert!(
        !names.contains("lead-qualification"),
        "a flow an event starts is not offered: {names}"
    );
    assert_eq!(app.count("runs").await, 0, "no digest run: {replies}");
    assert!(!replies.contains("Cost"), "{replies}");
}
