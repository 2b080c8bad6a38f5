//! The MFRC522 driver against the SPI traffic the datasheet prescribes: init, version, REQA with
//! and without a card, 4/7/10-byte UIDs over the cascade levels, HLTA after a read, and bad
//! answers and a silent chip reported as errors within a bounded number of polls.

mod common;

use common::{
    cascade_level, exchange, hlta, init_sequence, read_reg, reg, reqa, spi, transceive_start,
    unanswered, write_reg,
};
use eldergate_firmware::mfrc522::{crc_a, ChipVersion, Error, Mfrc522};
use eldergate_firmware::reader::{CardSource, Display, Message, Terminal};
use eldergate_protocol::serial::{decode, Body, MAX_WIRE};

type SpiTransactions = Vec<embedded_hal_mock::eh1::spi::Transaction<u8>>;
type ReadResult = Result<Option<Vec<u8>>, Error<embedded_hal::spi::ErrorKind>>;

/// Reads one UID; hands back the SPI mock so the test can call `done()`.
fn read_one(expected: &[SpiTransactions]) -> (ReadResult, embedded_hal_mock::eh1::spi::Mock<u8>) {
    let mut reader = Mfrc522::new(spi(expected));
    let mut uid = [0u8; 10];
    let got = reader
        .read_uid(&mut uid)
        .map(|n| n.map(|n| uid[..n].to_vec()));
    (got, reader.release())
}

#[test]
fn init_soft_resets_sets_the_25ms_timer_100_percent_ask_crc_preset_and_antenna_on() {
    let mut reader = Mfrc522::new(spi(&[init_sequence()]));
    reader.init().unwrap();
    reader.release().done();
}

#[test]
fn an_antenna_already_on_is_not_written_again() {
    let mut reader = Mfrc522::new(spi(&[read_reg(reg::TX_CONTROL, 0x83)]));
    reader.antenna_on().unwrap();
    reader.release().done();
}

#[test]
fn version_register_tells_v1_v2_and_anything_else() {
    let mut reader = Mfrc522::new(spi(&[
        read_reg(reg::VERSION, 0x91),
        read_reg(reg::VERSION, 0x92),
        read_reg(reg::VERSION, 0x00),
    ]));
    assert_eq!(reader.version().unwrap(), ChipVersion::V1);
    assert_eq!(reader.version().unwrap(), ChipVersion::V2);
    assert_eq!(reader.version().unwrap(), ChipVersion::Other(0x00));
    reader.release().done();
}

#[test]
fn no_card_in_the_field_reads_as_none() {
    let (got, mut mock) = read_one(&[unanswered(&[0x26], 7)]);
    assert_eq!(got, Ok(None));
    mock.done();
}

#[test]
fn wupa_is_a_7_bit_short_frame_returning_the_atqa() {
    let mut reader = Mfrc522::new(spi(&[exchange(&[0x52], 7, &[0x44, 0x00])]));
    assert_eq!(reader.wake_up_a().unwrap(), Some([0x44, 0x00]));
    reader.release().done();
}

#[test]
fn a_4_byte_uid_is_selected_and_the_card_halted() {
    let (got, mut mock) = read_one(&[
        reqa([0x04, 0x00]),
        cascade_level(0x93, [0x1d, 0xdc, 0xcf, 0x2d], 0x08),
        hlta(),
    ]);
    assert_eq!(got, Ok(Some(vec![0x1d, 0xdc, 0xcf, 0x2d])));
    mock.done();
}

#[test]
fn a_7_byte_uid_is_read_over_two_cascade_levels_without_the_cascade_tag() {
    let (got, mut mock) = read_one(&[
        reqa([0x44, 0x00]),
        cascade_level(0x93, [0x88, 0x04, 0x51, 0x6a], 0x04),
        cascade_level(0x95, [0x72, 0x3c, 0x5e, 0x80], 0x00),
        hlta(),
    ]);
    assert_eq!(
        got,
        Ok(Some(vec![0x04, 0x51, 0x6a, 0x72, 0x3c, 0x5e, 0x80]))
    );
    mock.done();
}

#[test]
fn a_10_byte_uid_is_read_over_three_cascade_levels() {
    let (got, mut mock) = read_one(&[
        reqa([0x84, 0x00]),
        cascade_level(0x93, [0x88, 1, 2, 3], 0x04),
        cascade_level(0x95, [0x88, 4, 5, 6], 0x04),
        cascade_level(0x97, [7, 8, 9, 10], 0x20),
        hlta(),
    ]);
    assert_eq!(got, Ok(Some(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10])));
    mock.done();
}

#[test]
fn select_gives_the_final_sak() {
    let mut reader = Mfrc522::new(spi(&[
        cascade_level(0x93, [0x88, 0x04, 0x51, 0x6a], 0x04),
        cascade_level(0x95, [0x72, 0x3c, 0x5e, 0x80], 0x00),
    ]));
    let uid = reader.select().unwrap().unwrap();
    assert_eq!(uid.as_bytes().len(), 7);
    assert_eq!(uid.sak(), 0x00);
    reader.release().done();
}

#[test]
fn a_wrong_bcc_is_reported_not_panicked() {
    let (got, mut mock) = read_one(&[
        reqa([0x04, 0x00]),
        exchange(&[0x93, 0x20], 0, &[0x1d, 0xdc, 0xcf, 0x2d, 0x00]),
    ]);
    assert_eq!(got, Err(Error::Bcc));
    mock.done();
}

#[test]
fn a_sak_with_a_wrong_crc_is_reported() {
    let uid_bcc = [0x1d, 0xdc, 0xcf, 0x2d, 0x23]; // last: BCC, the XOR of the UID bytes
    let mut select = vec![0x93, 0x70];
    select.extend_from_slice(&uid_bcc);
    let (got, mut mock) = read_one(&[
        reqa([0x04, 0x00]),
        exchange(&[0x93, 0x20], 0, &uid_bcc),
        exchange(&common::with_crc(&select), 0, &[0x08, 0xde, 0xad]),
    ]);
    assert_eq!(got, Err(Error::Crc));
    mock.done();
}

#[test]
fn a_missing_cascade_tag_is_a_bad_answer() {
    let (got, mut mock) = read_one(&[
        reqa([0x44, 0x00]),
        cascade_level(0x93, [0x04, 0x51, 0x6a, 0x72], 0x04),
    ]);
    assert_eq!(got, Err(Error::BadAnswer));
    mock.done();
}

#[test]
fn two_cards_at_once_are_a_collision() {
    let (got, mut mock) = read_one(&[
        transceive_start(&[0x26], 7),
        read_reg(reg::COM_IRQ, common::IRQ_RECEIVED),
        read_reg(reg::ERROR, 0x08),
    ]);
    assert_eq!(got, Err(Error::Collision));
    mock.done();
}

#[test]
fn a_fifo_level_larger_than_the_expected_answer_is_a_bad_answer_not_an_overrun() {
    let (got, mut mock) = read_one(&[
        transceive_start(&[0x26], 7),
        read_reg(reg::COM_IRQ, common::IRQ_RECEIVED),
        read_reg(reg::ERROR, 0x00),
        read_reg(reg::FIFO_LEVEL, 0x7F),
    ]);
    assert_eq!(got, Err(Error::BadAnswer));
    mock.done();
}

#[test]
fn a_silent_chip_times_out_after_the_poll_limit_and_is_left_idle() {
    let mut reader = Mfrc522::new(spi(&[
        transceive_start(&[0x26], 7),
        read_reg(reg::COM_IRQ, 0x00),
        read_reg(reg::COM_IRQ, 0x00),
        read_reg(reg::COM_IRQ, 0x00),
        write_reg(reg::COMMAND, 0x00),
    ]))
    .with_poll_limit(3);
    let mut uid = [0u8; 10];
    assert_eq!(reader.read_uid(&mut uid), Err(Error::Timeout));
    reader.release().done();
}

#[test]
fn a_chip_stuck_in_soft_reset_times_out() {
    let mut reader = Mfrc522::new(spi(&[
        write_reg(reg::COMMAND, 0x0F),
        read_reg(reg::COMMAND, 0x10),
        read_reg(reg::COMMAND, 0x10),
    ]))
    .with_poll_limit(2);
    assert_eq!(reader.init(), Err(Error::Timeout));
    reader.release().done();
}

#[test]
fn crc_a_matches_the_standard_and_the_hlta_frame() {
    assert_eq!(crc_a(&[0x50, 0x00]), [0x57, 0xcd]);
    // CRC-16/ISO-IEC-14443-3-A check value 0xBF05, sent low byte first.
    assert_eq!(crc_a(b"123456789"), [0x05, 0xbf]);
    assert_eq!(
        crc_a(&[0x93, 0x70, 1, 2, 3, 4, 4]),
        common::crc_a(&[0x93, 0x70, 1, 2, 3, 4, 4])
    );
}

#[derive(Default)]
struct Screen(Vec<String>);

impl Display for Screen {
    fn show_answer(&mut self, result: u8, name: &str, _: i32, _: i32, _: i32, _: i32) {
        self.0.push(format!("{result} {name}"));
    }
    fn show_message(&mut self, m: Message) {
        self.0.push(format!("{m:?}"));
    }
}

#[test]
fn the_terminal_sends_the_uid_the_mfrc522_read() {
    let mut reader = Mfrc522::new(spi(&[
        reqa([0x04, 0x00]),
        cascade_level(0x93, [0x1d, 0xdc, 0xcf, 0x2d], 0x08),
        hlta(),
    ]));
    let mut terminal = Terminal::new(Screen::default(), 41);
    let mut out = [0u8; MAX_WIRE];
    let n = terminal
        .poll(&mut reader, "rdr-01", 0, &mut out)
        .unwrap()
        .unwrap();
    let frame = decode(&mut out[..n - 1]).unwrap();
    assert_eq!(frame.seq, 41);
    assert_eq!(
        frame.body,
        Body::CardTap {
            uid: &[0x1d, 0xdc, 0xcf, 0x2d],
            mac: &[],
            price: None
        }
    );
    reader.release().done();
}
